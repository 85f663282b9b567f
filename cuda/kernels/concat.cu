// Channel concatenation (one part at a time) and the flatten of an NHWC tensor into
// PyTorch's channel-major feature order. One thread per element of the buffer written, so
// writes are coalesced and no two threads write the same element.
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/launch.cuh"

namespace kiln::cuda {

namespace {

template <class T>
__global__ void concat_forward_kernel(const T* part, Dims4 part_dims, T* whole, Dims4 whole_dims,
                                      std::int64_t channel_offset, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const math::Index4 e = math::index_of(part_dims, i);
    whole[whole_dims.at(e.n, e.c + channel_offset, e.h, e.w)] = part[i];
  }
}

template <class T>
__global__ void concat_backward_kernel(const T* dwhole, Dims4 whole_dims, T* dpart, Dims4 part_dims,
                                       std::int64_t channel_offset, bool accumulate, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const math::Index4 e = math::index_of(part_dims, i);
    put(dpart[i], ld(dwhole[whole_dims.at(e.n, e.c + channel_offset, e.h, e.w)]), accumulate);
  }
}

// y (NCHW order) from x (laid out as `dims`): y[i] is element (n, c, h, w) of x. A
// permutation: x and y must not alias (nor dy and dx below).
template <class T>
__global__ void to_nchw_kernel(const T* x, Dims4 dims, T* y, std::int64_t count) {
  Dims4 nchw = dims;
  nchw.nhwc = false;
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const math::Index4 e = math::index_of(nchw, i);
    y[i] = x[dims.at(e.n, e.c, e.h, e.w)];
  }
}

// dx (laid out as `dims`) from dy (NCHW order).
template <class T>
__global__ void from_nchw_kernel(const T* dy, Dims4 dims, T* dx, bool accumulate, std::int64_t count) {
  Dims4 nchw = dims;
  nchw.nhwc = false;
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const math::Index4 e = math::index_of(dims, i);
    put(dx[i], ld(dy[nchw.at(e.n, e.c, e.h, e.w)]), accumulate);
  }
}

}  // namespace

void concat_forward_part(DType t, const void* part, const Dims4& part_dims, void* whole, const Dims4& whole_dims,
                         std::int64_t channel_offset, cudaStream_t s) {
  const std::int64_t count = part_dims.count();
  if (count <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    concat_forward_kernel<<<grid_for(count), kThreads, 0, s>>>(static_cast<const T*>(part), part_dims, static_cast<T*>(whole),
                                                               whole_dims, channel_offset, count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void concat_backward_part(DType t, const void* dwhole, const Dims4& whole_dims, void* dpart, const Dims4& part_dims,
                          std::int64_t channel_offset, bool accumulate, cudaStream_t s) {
  const std::int64_t count = part_dims.count();
  if (count <= 0 || !dpart) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    concat_backward_kernel<<<grid_for(count), kThreads, 0, s>>>(static_cast<const T*>(dwhole), whole_dims,
                                                                static_cast<T*>(dpart), part_dims, channel_offset, accumulate,
                                                                count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void nhwc_to_nchw(DType t, const void* x, const Dims4& dims, void* y, cudaStream_t s) {
  const std::int64_t count = dims.count();
  if (count <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    to_nchw_kernel<<<grid_for(count), kThreads, 0, s>>>(static_cast<const T*>(x), dims, static_cast<T*>(y), count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void nchw_to_nhwc_grad(DType t, const void* dy, const Dims4& dims, void* dx, bool accumulate, cudaStream_t s) {
  const std::int64_t count = dims.count();
  if (count <= 0 || !dx) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    from_nchw_kernel<<<grid_for(count), kThreads, 0, s>>>(static_cast<const T*>(dy), dims, static_cast<T*>(dx), accumulate,
                                                          count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
