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

__global__ void forward_kernel(const float* a, const float* b, bool per_channel, Dims4 d, float* y) {
  for (std::int64_t i = first_index(); i < d.count(); i += grid_stride()) y[i] = a[i] * b[b_index(per_channel, d, i)];
}

// out = dy * other (other indexed as b is when `other_per_channel`).
__global__ void product_grad_kernel(const float* dy, const float* other, bool other_per_channel, Dims4 d, float* out,
                                    bool accumulate) {
  for (std::int64_t i = first_index(); i < d.count(); i += grid_stride()) {
    const float v = dy[i] * other[b_index(other_per_channel, d, i)];
    out[i] = accumulate ? out[i] + v : v;
  }
}

__global__ void __launch_bounds__(kThreads) per_channel_grad_kernel(const float* a, const float* dy, Dims4 d, float* db,
                                                                    bool accumulate) {
  __shared__ double shared[kThreads];
  const std::int64_t hw = d.h * d.w;
  for (std::int64_t nc = blockIdx.x; nc < d.n * d.c; nc += gridDim.x) {
    const std::int64_t n = nc / d.c, c = nc % d.c;
    double sum = 0.0;
    for (std::int64_t s = threadIdx.x; s < hw; s += kThreads) {
      const std::int64_t o = d.at(n, c, s / d.w, s % d.w);
      sum += static_cast<double>(dy[o]) * a[o];
    }
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) db[nc] = accumulate ? db[nc] + static_cast<float>(sum) : static_cast<float>(sum);
  }
}

}  // namespace

void mul_forward(const float* a, const float* b, bool per_channel, const Dims4& dims, float* y, cudaStream_t s) {
  if (dims.count() <= 0) return;
  forward_kernel<<<grid_for(dims.count()), kThreads, 0, s>>>(a, b, per_channel, dims, y);
  KILN_CUDA_LAUNCH_CHECK();
}

void mul_backward(const float* a, const float* b, bool per_channel, const float* dy, const Dims4& dims, float* da,
                  bool accumulate_a, float* db, bool accumulate_b, cudaStream_t s) {
  if (dims.count() <= 0) return;
  if (da) {
    product_grad_kernel<<<grid_for(dims.count()), kThreads, 0, s>>>(dy, b, per_channel, dims, da, accumulate_a);
    KILN_CUDA_LAUNCH_CHECK();
  }
  if (!db) return;
  if (per_channel) {
    per_channel_grad_kernel<<<blocks_for_items(dims.n * dims.c), kThreads, 0, s>>>(a, dy, dims, db, accumulate_b);
  } else {
    product_grad_kernel<<<grid_for(dims.count()), kThreads, 0, s>>>(dy, a, false, dims, db, accumulate_b);
  }
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
