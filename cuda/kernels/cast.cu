// Mixed precision's own kernels: the dtype copies of the fp32 master weights and the
// widening of their gradients, and fp16's dynamic loss scale kept on the device (the CPU's
// LossScale in backend/executor.hpp, step for step).
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/launch.cuh"
#include "math/loss_scale.hpp"

namespace kiln::cuda {

namespace {

template <class T>
__global__ void from_f32_kernel(const float* src, T* dst, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) dst[i] = st<T>(src[i]);
}

template <class T>
__global__ void to_f32_kernel(const T* src, float* dst, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) dst[i] = ld(src[i]);
}

__global__ void check_kernel(LossScaler* scaler, const unsigned int* nonfinite, float* used) {
  scaler->skip = math::loss_scale_skips(*nonfinite != 0u, scaler->scale) ? 1u : 0u;
  if (used) *used = scaler->scale;
}

__global__ void advance_kernel(LossScaler* scaler, std::int64_t growth_interval) {
  math::loss_scale_advance(scaler->scale, scaler->good_steps, scaler->skip != 0u, growth_interval);
  scaler->skip = 0u;
}

}  // namespace

void cast_from_f32(DType t, const float* src, void* dst, std::int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    from_f32_kernel<<<grid_for(count), kThreads, 0, s>>>(src, static_cast<T*>(dst), count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void cast_to_f32(DType t, const void* src, float* dst, std::int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    to_f32_kernel<<<grid_for(count), kThreads, 0, s>>>(static_cast<const T*>(src), dst, count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void loss_scale_check(LossScaler* scaler, const unsigned int* nonfinite, float* used, cudaStream_t s) {
  check_kernel<<<1, 1, 0, s>>>(scaler, nonfinite, used);
  KILN_CUDA_LAUNCH_CHECK();
}

void loss_scale_advance(LossScaler* scaler, std::int64_t growth_interval, cudaStream_t s) {
  advance_kernel<<<1, 1, 0, s>>>(scaler, growth_interval);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
