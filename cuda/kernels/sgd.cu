// One SGD step over a parameter tensor: math/sgd.hpp's sgd_update per element.
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "math/sgd.hpp"

namespace kiln::cuda {

namespace {

constexpr int kThreads = 256;

// momentum may be null when h.momentum is 0 (sgd_update then never touches the buffer).
// With fp16's loss scale, the CPU's update: nothing on a skipped step, otherwise the gradient
// times 1 / scale (at scale 1 the same operations as fp32's).
__global__ void sgd_kernel(float* w, float* momentum, const float* grad, std::int64_t count, math::SgdHyper h,
                           const LossScaler* scaler, const math::SgdHyper* device_h) {
  if (scaler && scaler->skip) return;
  if (device_h) h = *device_h;
  const float unscale = scaler ? 1.0f / scaler->scale : 1.0f;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    float unused = 0.0f;
    math::sgd_update(w[i], momentum ? momentum[i] : unused, unscale == 1.0f ? grad[i] : grad[i] * unscale, h);
  }
}

}  // namespace

void sgd_update(float* w, float* momentum, const float* grad, std::int64_t count, const math::SgdHyper& h,
                const LossScaler* scaler, cudaStream_t s, const math::SgdHyper* device_h) {
  if (count <= 0) return;
  const std::int64_t blocks = (count + kThreads - 1) / kThreads;
  const auto grid = static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
  sgd_kernel<<<grid, kThreads, 0, s>>>(w, momentum, grad, count, h, scaler, device_h);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
