// Lookahead (EMA) of the weights, and the check for non-finite gradients.
#include "cuda/check.hpp"
#include "cuda/kernels.hpp"

namespace kiln::cuda {

namespace {

constexpr int kThreads = 256;

unsigned int blocks_for(std::int64_t count) {
  std::int64_t b = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(b < 65535 ? b : 65535);
}

__global__ void lookahead_kernel(float* w, float* ema, std::int64_t count, float t) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float e = ema[i] + t * (w[i] - ema[i]);
    ema[i] = e;
    w[i] = e;
  }
}

__global__ void nonfinite_kernel(const float* v, std::int64_t count, unsigned int* flag) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    if (!isfinite(v[i])) *flag = 1u;  // a benign race: every writer writes 1
  }
}

}  // namespace

void lookahead_update(float* w, float* ema, std::int64_t count, float decay, cudaStream_t s) {
  if (count <= 0) return;
  lookahead_kernel<<<blocks_for(count), kThreads, 0, s>>>(w, ema, count, 1.0f - decay);
  KILN_CUDA_LAUNCH_CHECK();
}

void flag_nonfinite(const float* values, std::int64_t count, unsigned int* flag, cudaStream_t s) {
  if (count <= 0) return;
  nonfinite_kernel<<<blocks_for(count), kThreads, 0, s>>>(values, count, flag);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
