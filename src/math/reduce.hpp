#pragma once

// Sums of floats in a fixed order that still vectorizes: 16 interleaved float partial sums
// (float addition does not reassociate, so one running sum cannot use SIMD lanes), then the
// partials and the tail added in double. The order depends only on n, never on threads or
// on which instruction set runs it, so results repeat exactly.
#include <cstdint>

#include "math/simd.hpp"

namespace kiln::math {

inline constexpr std::int64_t kSumLanes = 16;

// sum of v[i * stride] for i < n (stride 1: contiguous).
KILN_INLINE inline double sum_floats(const float* v, std::int64_t n, std::int64_t stride = 1) {
  float part[kSumLanes] = {};
  std::int64_t t = 0;
  if (stride == 1)
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) part[k] += v[t + k];
  else
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) part[k] += v[(t + k) * stride];
  double sum = 0.0;
  for (; t < n; ++t) sum += v[t * stride];
  for (float q : part) sum += q;
  return sum;
}

// sum of (v[i * stride] - center)^2 for i < n.
KILN_INLINE inline double sum_squared_deviations(const float* v, std::int64_t n, float center, std::int64_t stride = 1) {
  float part[kSumLanes] = {};
  std::int64_t t = 0;
  if (stride == 1)
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) {
        const float d = v[t + k] - center;
        part[k] += d * d;
      }
  else
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) {
        const float d = v[(t + k) * stride] - center;
        part[k] += d * d;
      }
  double sum = 0.0;
  for (; t < n; ++t) {
    const double d = static_cast<double>(v[t * stride]) - center;
    sum += d * d;
  }
  for (float q : part) sum += q;
  return sum;
}

// Adds the sum of a[i * stride] and of a[i * stride] * (b[i * stride] - center) for i < n to
// `sum` and `dot`: batchnorm backward's two sums.
KILN_INLINE inline void sum_and_centered_dot(const float* a, const float* b, std::int64_t n, float center, double& sum, double& dot,
                                 std::int64_t stride = 1) {
  float ps[kSumLanes] = {}, pd[kSumLanes] = {};
  std::int64_t t = 0;
  if (stride == 1)
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) {
        ps[k] += a[t + k];
        pd[k] += a[t + k] * (b[t + k] - center);
      }
  else
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) {
        const std::int64_t i = (t + k) * stride;
        ps[k] += a[i];
        pd[k] += a[i] * (b[i] - center);
      }
  for (; t < n; ++t) {
    sum += a[t * stride];
    dot += static_cast<double>(a[t * stride]) * (static_cast<double>(b[t * stride]) - center);
  }
  for (std::int64_t k = 0; k < kSumLanes; ++k) sum += ps[k], dot += pd[k];
}

// sum of a[i] * b[i * stride] for i < n.
KILN_INLINE inline double dot_floats(const float* a, const float* b, std::int64_t n, std::int64_t stride = 1) {
  float part[kSumLanes] = {};
  std::int64_t t = 0;
  if (stride == 1)
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) part[k] += a[t + k] * b[t + k];
  else
    for (; t + kSumLanes <= n; t += kSumLanes)
      for (std::int64_t k = 0; k < kSumLanes; ++k) part[k] += a[t + k] * b[(t + k) * stride];
  double sum = 0.0;
  for (; t < n; ++t) sum += static_cast<double>(a[t]) * b[t * stride];
  for (float q : part) sum += q;
  return sum;
}

}  // namespace kiln::math
