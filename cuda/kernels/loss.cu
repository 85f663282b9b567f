// Softmax cross-entropy with label smoothing: one thread per sample (classes is small), the
// row's math is math/loss.hpp's. The batch's loss and correct count are added to device
// accumulators with atomics, so their sum order (not the per-sample values) differs from
// the CPU's.
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "math/loss.hpp"

namespace kiln::cuda {

namespace {

constexpr int kThreads = 128;

__global__ void loss_kernel(const float* logits, const std::int32_t* labels, std::int64_t n, int classes, float smoothing,
                            float grad_scale, float* dlogits, double* loss_sum, unsigned long long* correct) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    const std::int64_t row = i * classes;
    const math::SampleLoss s = math::softmax_cross_entropy(logits + row, classes, labels[i], smoothing, grad_scale,
                                                           dlogits ? dlogits + row : nullptr);
    if (loss_sum) atomicAdd(loss_sum, static_cast<double>(s.loss));
    if (correct && s.correct) atomicAdd(correct, 1ull);
  }
}

}  // namespace

void softmax_cross_entropy(const float* logits, const std::int32_t* labels, std::int64_t n, int classes, float smoothing,
                           float grad_scale, float* dlogits, double* loss_sum, unsigned long long* correct, cudaStream_t s) {
  if (n <= 0 || classes <= 0) return;
  const std::int64_t blocks = (n + kThreads - 1) / kThreads;
  loss_kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kThreads, 0, s>>>(
      logits, labels, n, classes, smoothing, grad_scale, dlogits, loss_sum, correct);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
