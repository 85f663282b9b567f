#pragma once

// math/pool.hpp's window scans for a plane whose rows and columns are `row_stride` and
// `col_stride` floats apart, so that one kernel reads NCHW planes (W, 1) and NHWC planes
// (W * C, C). With col_stride 1 they are max_offset and avg_window exactly: the same scan
// order, the same first-maximum and NaN rule, the same float sum.
#include <cmath>
#include <cstdint>

#include "math/hd.hpp"
#include "math/pool.hpp"

namespace kiln::math {

// Offset (r * row_stride + c * col_stride) in `plane` of the window's first maximum in
// row-major scan order; a NaN wins over any number. V: float, or a CUDA kernel's half
// type (read as float).
template <class V>
KILN_HD std::int64_t max_offset_strided(const V* plane, std::int64_t row_stride, std::int64_t col_stride, PoolSpan h,
                                        PoolSpan w) {
  std::int64_t best = h.begin * row_stride + w.begin * col_stride;
  float best_value = -INFINITY;
  for (std::int64_t r = h.begin; r < h.end; ++r)
    for (std::int64_t c = w.begin; c < w.end; ++c) {
      const std::int64_t o = r * row_stride + c * col_stride;
      float v = static_cast<float>(plane[o]);
      if (v > best_value || v != v) best_value = v, best = o;  // v != v: NaN
    }
  return best;
}

template <class V>
KILN_HD float avg_window_strided(const V* plane, std::int64_t row_stride, std::int64_t col_stride, PoolSpan h,
                                 PoolSpan w) {
  float sum = 0.0f;
  for (std::int64_t r = h.begin; r < h.end; ++r)
    for (std::int64_t c = w.begin; c < w.end; ++c) sum += static_cast<float>(plane[r * row_stride + c * col_stride]);
  return sum / static_cast<float>(h.extent * w.extent);
}

// The outputs whose windows (along one axis) may read input index `i`: [first, last],
// possibly empty (first > last). Callers still test membership with pool_span, so this
// only has to be a superset.
struct PoolCover {
  std::int64_t first = 0;
  std::int64_t last = -1;
};

KILN_HD PoolCover pool_cover(std::int64_t i, std::int64_t kernel, std::int64_t stride, std::int64_t pad, std::int64_t outputs) {
  // Window o starts at o * stride - pad and reads [start, start + kernel): it contains i
  // when o * stride <= i + pad < o * stride + kernel.
  const std::int64_t shifted = i + pad;  // >= 0
  PoolCover c;
  c.first = shifted < kernel ? 0 : (shifted - kernel) / stride + 1;
  c.last = shifted / stride;
  if (c.last > outputs - 1) c.last = outputs - 1;
  return c;
}

}  // namespace kiln::math
