// Softmax cross-entropy with label smoothing: the row's math is math/loss.hpp's. One block
// does the whole batch (a batch is at most a few thousand rows of a few classes): each
// thread takes rows tid, tid + kThreads, ... in order, and the block adds the threads'
// partial sums in a fixed tree (block_sum), so the batch's loss is the same double on every
// run. No atomics: their order varies from run to run, and so would the last bits of the
// loss that metrics.jsonl and a resumed run report.
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/launch.cuh"
#include "math/loss.hpp"

namespace kiln::cuda {

namespace {

template <class T>
__global__ void loss_kernel(const T* logits, const std::int32_t* labels, std::int64_t n, int classes, float smoothing,
                            float grad_scale, const float* loss_scale, T* dlogits, double* loss_sum,
                            unsigned long long* correct) {
  __shared__ double partial[kThreads];
  if (loss_scale) grad_scale *= *loss_scale;  // a power of two: exact
  double loss = 0;
  double right = 0;  // counts below 2^53 are exact in a double
  for (std::int64_t i = threadIdx.x; i < n; i += kThreads) {
    const std::int64_t row = i * classes;
    const math::SampleLoss s = math::softmax_cross_entropy<T, T>(logits + row, classes, labels[i], smoothing, grad_scale,
                                                           dlogits ? dlogits + row : nullptr);
    loss += static_cast<double>(s.loss);
    right += s.correct ? 1.0 : 0.0;
  }
  const double loss_total = block_sum(loss, partial);
  const double right_total = block_sum(right, partial);
  if (threadIdx.x == 0) {
    if (loss_sum) *loss_sum += loss_total;
    if (correct) *correct += static_cast<unsigned long long>(right_total);
  }
}

}  // namespace

void softmax_cross_entropy(DType t, const void* logits, const std::int32_t* labels, std::int64_t n, int classes,
                           float smoothing, float grad_scale, const float* loss_scale, void* dlogits, double* loss_sum,
                           unsigned long long* correct, cudaStream_t s) {
  if (n <= 0 || classes <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    loss_kernel<<<1, kThreads, 0, s>>>(static_cast<const T*>(logits), labels, n, classes, smoothing, grad_scale, loss_scale,
                                       static_cast<T*>(dlogits), loss_sum, correct);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
