#pragma once

// Pooling index math, PyTorch's (aten/src/ATen/native/cpu/{Max,Avg}PoolKernel.cpp), shared by
// the CPU and CUDA backends.
#include <cmath>
#include <cstdint>

#include "math/hd.hpp"

namespace kiln::math {

// One pooling window along one axis: the input rows (or columns) [begin, end) it reads, and
// `extent`, its length for the average's divisor. count_include_pad=True counts padding but
// not what lies past it: the window is cut at size + pad before it is clipped to the input,
// so a ceil-mode window that hangs past the padding divides by less than the kernel.
struct PoolSpan {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::int64_t extent = 0;
};

KILN_HD PoolSpan pool_span(std::int64_t out, std::int64_t kernel, std::int64_t stride, std::int64_t pad, std::int64_t size) {
  std::int64_t start = out * stride - pad;
  std::int64_t end = start + kernel < size + pad ? start + kernel : size + pad;
  PoolSpan s;
  s.extent = end - start;
  s.begin = start > 0 ? start : 0;
  s.end = end < size ? end : size;
  return s;
}

// Offset (row * width + column) in `plane` of the window's maximum: the first one in row-major
// scan order, and a NaN wins over any number (PyTorch's `val > maxval || isnan(val)`). Padding
// is -inf, so it never wins and the window is simply clipped to the input. Forward and
// backward both call this, so the gradient goes exactly where the forward value came from.
KILN_HD std::int64_t max_offset(const float* plane, std::int64_t width, PoolSpan h, PoolSpan w) {
  std::int64_t best = h.begin * width + w.begin;
  float best_value = -INFINITY;
  for (std::int64_t r = h.begin; r < h.end; ++r)
    for (std::int64_t c = w.begin; c < w.end; ++c) {
      const float v = plane[r * width + c];
      // Selects, not branches: the comparison is data-dependent and mispredicts half the
      // time. v != v: NaN (PyTorch's `val > maxval || isnan(val)`).
      const bool take = (v > best_value) | (v != v);
      best_value = take ? v : best_value;
      best = take ? r * width + c : best;
    }
  return best;
}

KILN_HD float avg_window(const float* plane, std::int64_t width, PoolSpan h, PoolSpan w) {
  float sum = 0.0f;
  for (std::int64_t r = h.begin; r < h.end; ++r)
    for (std::int64_t c = w.begin; c < w.end; ++c) sum += plane[r * width + c];
  return sum / static_cast<float>(h.extent * w.extent);
}

}  // namespace kiln::math
