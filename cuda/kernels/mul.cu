// The element-wise product of two tensors, the second either of the first's dims or one
// value per (sample, channel) broadcast over h and w (math::per_channel_index). Element-wise
// parts are grid-stride loops; the per-channel gradient is one block per (sample, channel),
// summed in double in a fixed tree, so it is deterministic and needs no atomics.
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/launch.cuh"

namespace kiln::cuda {

namespace {

__device__ std::int64_t b_index(bool per_channel, const Dims4& d, std::int64_t i) {
  return per_channel ? math::per_channel_index(d, i) : i;
}

template <class T>
__global__ void forward_kernel(const T* a, const T* b, bool per_channel, Dims4 d, T* y) {
  for (std::int64_t i = first_index(); i < d.count(); i += grid_stride())
    y[i] = st<T>(ld(a[i]) * ld(b[b_index(per_channel, d, i)]));
}

// out = dy * other (other indexed as b is when `other_per_channel`).
template <class T>
__global__ void product_grad_kernel(const T* dy, const T* other, bool other_per_channel, Dims4 d, T* out, bool accumulate) {
  for (std::int64_t i = first_index(); i < d.count(); i += grid_stride())
    put(out[i], ld(dy[i]) * ld(other[b_index(other_per_channel, d, i)]), accumulate);
}

template <class T>
__global__ void __launch_bounds__(kThreads) per_channel_grad_kernel(const T* a, const T* dy, Dims4 d, T* db, bool accumulate) {
  __shared__ double shared[kThreads];
  const std::int64_t hw = d.h * d.w;
  for (std::int64_t nc = blockIdx.x; nc < d.n * d.c; nc += gridDim.x) {
    const std::int64_t n = nc / d.c, c = nc % d.c;
    double sum = 0.0;
    for (std::int64_t s = threadIdx.x; s < hw; s += kThreads) {
      const std::int64_t o = d.at(n, c, s / d.w, s % d.w);
      sum += static_cast<double>(ld(dy[o])) * ld(a[o]);
    }
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) put(db[nc], static_cast<float>(sum), accumulate);
  }
}

}  // namespace

void mul_forward(DType t, const void* a, const void* b, bool per_channel, const Dims4& dims, void* y, cudaStream_t s) {
  if (dims.count() <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    forward_kernel<<<grid_for(dims.count()), kThreads, 0, s>>>(static_cast<const T*>(a), static_cast<const T*>(b), per_channel,
                                                               dims, static_cast<T*>(y));
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void mul_backward(DType t, const void* a, const void* b, bool per_channel, const void* dy, const Dims4& dims, void* da,
                  bool accumulate_a, void* db, bool accumulate_b, cudaStream_t s) {
  if (dims.count() <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    const T* as = static_cast<const T*>(a);
    const T* bs = static_cast<const T*>(b);
    const T* dys = static_cast<const T*>(dy);
    if (da) {
      product_grad_kernel<<<grid_for(dims.count()), kThreads, 0, s>>>(dys, bs, per_channel, dims, static_cast<T*>(da),
                                                                      accumulate_a);
      KILN_CUDA_LAUNCH_CHECK();
    }
    if (!db) return;
    if (per_channel) {
      per_channel_grad_kernel<<<blocks_for_items(dims.n * dims.c), kThreads, 0, s>>>(as, dys, dims, static_cast<T*>(db),
                                                                                     accumulate_b);
    } else {
      product_grad_kernel<<<grid_for(dims.count()), kThreads, 0, s>>>(dys, as, false, dims, static_cast<T*>(db), accumulate_b);
    }
    KILN_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace kiln::cuda
