// Nearest-neighbour upsampling by integer factors. Forward: each output gathers its source
// pixel; backward: each input gathers the scale_h x scale_w outputs it fed (no atomics, a
// fixed order, so the CPU's sum exactly). Grid-stride loops in either layout (Dims4).
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/launch.cuh"

namespace kiln::cuda {

namespace {

template <class T>
__global__ void forward_kernel(const T* x, Dims4 in, T* y, Dims4 out, std::int64_t sh, std::int64_t sw) {
  for (std::int64_t i = first_index(); i < out.count(); i += grid_stride()) {
    const math::Index4 o = math::index_of(out, i);
    y[i] = x[in.at(o.n, o.c, o.h / sh, o.w / sw)];
  }
}

template <class T>
__global__ void backward_kernel(const T* dy, Dims4 out, T* dx, Dims4 in, bool accumulate, std::int64_t sh,
                                std::int64_t sw) {
  for (std::int64_t i = first_index(); i < in.count(); i += grid_stride()) {
    const math::Index4 p = math::index_of(in, i);
    float sum = 0.0f;
    for (std::int64_t r = 0; r < sh; ++r)
      for (std::int64_t s = 0; s < sw; ++s) sum += ld(dy[out.at(p.n, p.c, p.h * sh + r, p.w * sw + s)]);
    put(dx[i], sum, accumulate);
  }
}

}  // namespace

void upsample_forward(DType t, const void* x, const Dims4& in, void* y, const Dims4& out, std::int64_t scale_h,
                      std::int64_t scale_w, cudaStream_t s) {
  if (out.count() <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    forward_kernel<<<grid_for(out.count()), kThreads, 0, s>>>(static_cast<const T*>(x), in, static_cast<T*>(y), out, scale_h,
                                                              scale_w);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void upsample_backward(DType t, const void* dy, const Dims4& out, void* dx, const Dims4& in, bool accumulate,
                       std::int64_t scale_h, std::int64_t scale_w, cudaStream_t s) {
  if (in.count() <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    backward_kernel<<<grid_for(in.count()), kThreads, 0, s>>>(static_cast<const T*>(dy), out, static_cast<T*>(dx), in,
                                                              accumulate, scale_h, scale_w);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
