#pragma once

// Sums in a fixed order that still vectorizes: 16 interleaved partial sums (floating-point
// addition does not reassociate, so one running sum cannot use SIMD lanes), then the
// partials and the tail added in double. The order depends only on n, never on threads or
// on which instruction set runs it (math/simd.hpp), so results repeat exactly.
//
// `Acc` is the partials' type. Batchnorm's statistics use double, as PyTorch's CPU kernels
// do: float partials of squared activations overflow to inf near 1e19, where double ones
// stay finite, and an infinite variance would hide a diverging run behind finite outputs.
#include <cstdint>

#include "math/simd.hpp"

namespace kiln::math {

inline constexpr std::int64_t kSumLanes = 16;

// sum of v[i * stride] for i < n (stride 1: contiguous).
template <class Acc = float>
KILN_INLINE inline double sum_floats(const float* v, std::int64_t n, std::int64_t stride = 1) {
  Acc part[kSumLanes] = {};
  std::int64_t t = 0;
  if (stride == 1)
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) part[k] += static_cast<Acc>(v[t + k]);
  else
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) part[k] += static_cast<Acc>(v[(t + k) * stride]);
  double sum = 0.0;
  for (; t < n; ++t) sum += v[t * stride];
  for (Acc q : part) sum += q;
  return sum;
}

// sum of (v[i * stride] - center)^2 for i < n, in double.
KILN_INLINE inline double sum_squared_deviations(const float* v, std::int64_t n, double center, std::int64_t stride = 1) {
  double part[kSumLanes] = {};
  std::int64_t t = 0;
  if (stride == 1)
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) {
        const double d = static_cast<double>(v[t + k]) - center;
        part[k] += d * d;
      }
  else
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) {
        const double d = static_cast<double>(v[(t + k) * stride]) - center;
        part[k] += d * d;
      }
  double sum = 0.0;
  for (; t < n; ++t) {
    const double d = static_cast<double>(v[t * stride]) - center;
    sum += d * d;
  }
  for (double q : part) sum += q;
  return sum;
}

// Adds the sum of a[i * stride] and of a[i * stride] * (b[i * stride] - center) for i < n to
// `sum` and `dot`, in double: batchnorm backward's two sums.
KILN_INLINE inline void sum_and_centered_dot(const float* a, const float* b, std::int64_t n, double center, double& sum,
                                             double& dot, std::int64_t stride = 1) {
  double ps[kSumLanes] = {}, pd[kSumLanes] = {};
  std::int64_t t = 0;
  if (stride == 1)
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) {
        ps[k] += a[t + k];
        pd[k] += static_cast<double>(a[t + k]) * (static_cast<double>(b[t + k]) - center);
      }
  else
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) {
        const std::int64_t i = (t + k) * stride;
        ps[k] += a[i];
        pd[k] += static_cast<double>(a[i]) * (static_cast<double>(b[i]) - center);
      }
  for (; t < n; ++t) {
    sum += a[t * stride];
    dot += static_cast<double>(a[t * stride]) * (static_cast<double>(b[t * stride]) - center);
  }
  for (std::int64_t k = 0; k < kSumLanes; ++k) sum += ps[k], dot += pd[k];
}

}  // namespace kiln::math
