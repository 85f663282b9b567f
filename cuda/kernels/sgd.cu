// One SGD step over a parameter tensor: math/sgd.hpp's sgd_update per element.
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "math/sgd.hpp"

namespace kiln::cuda {

namespace {

constexpr int kThreads = 256;

// momentum may be null when h.momentum is 0 (sgd_update then never touches the buffer).
__global__ void sgd_kernel(float* w, float* momentum, const float* grad, std::int64_t count, math::SgdHyper h) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    float unused = 0.0f;
    math::sgd_update(w[i], momentum ? momentum[i] : unused, grad[i], h);
  }
}

}  // namespace

void sgd_update(float* w, float* momentum, const float* grad, std::int64_t count, const math::SgdHyper& h, cudaStream_t s) {
  if (count <= 0) return;
  const std::int64_t blocks = (count + kThreads - 1) / kThreads;
  sgd_kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kThreads, 0, s>>>(w, momentum, grad, count, h);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
