// The device data pipeline's last step: the normalized, augmented input batch from uint8
// images (math/augment.hpp's augmented_pixel, as the CPU executor's stage), and the labels.
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/launch.cuh"
#include "math/augment.hpp"

namespace kiln::cuda {

namespace {

// One thread per output element, decoded from its offset in `d`'s layout.
template <class T>
__global__ void stage_kernel(const std::uint8_t* images, const std::int64_t* indices, const math::AugmentParams* augment,
                             math::PadMode pad, const float* mean, const float* inv_std, T* out, Dims4 d,
                             std::int64_t count) {
  const std::int64_t plane = d.c * d.h * d.w;
  for (std::int64_t o = first_index(); o < count; o += grid_stride()) {
    std::int64_t i = o, n = 0, c = 0, y = 0, x = 0;
    if (d.nhwc) {
      c = i % d.c, i /= d.c;
      x = i % d.w, i /= d.w;
      y = i % d.h, n = i / d.h;
    } else {
      x = i % d.w, i /= d.w;
      y = i % d.h, i /= d.h;
      c = i % d.c, n = i / d.c;
    }
    const std::uint8_t* image = images + indices[n] * plane;
    const math::AugmentParams a = augment ? augment[n] : math::AugmentParams{};
    out[o] = st<T>(math::augmented_pixel(image, static_cast<int>(d.h), static_cast<int>(d.w), static_cast<int>(c),
                                   static_cast<int>(y), static_cast<int>(x), a, pad, mean[c], inv_std[c]));
  }
}

__global__ void gather_labels_kernel(const std::uint8_t* labels, const std::int64_t* indices, std::int64_t n,
                                     std::int32_t* out) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) out[i] = static_cast<std::int32_t>(labels[indices[i]]);
}

}  // namespace

void stage_batch(DType t, const std::uint8_t* images, const std::int64_t* indices, const math::AugmentParams* augment,
                 math::PadMode pad, const float* mean, const float* inv_std, void* out, const Dims4& dims, cudaStream_t s) {
  const std::int64_t count = dims.count();
  if (count <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    stage_kernel<<<grid_for(count), kThreads, 0, s>>>(images, indices, augment, pad, mean, inv_std, static_cast<T*>(out),
                                                      dims, count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void gather_labels(const std::uint8_t* labels, const std::int64_t* indices, std::int64_t n, std::int32_t* out,
                   cudaStream_t s) {
  if (n <= 0) return;
  gather_labels_kernel<<<grid_for(n), kThreads, 0, s>>>(labels, indices, n, out);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
