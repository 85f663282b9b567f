#pragma once

// Convolution as a matrix product: the index math of im2col (gather every input value a
// kernel tap reads into one row per (channel, tap)) and of its adjoint col2im. Written once
// for the CPU loops (which work on whole ranges) and for CUDA kernels (one element per
// thread).
//
// The column matrix of one sample has K = c*kh*kw rows, row (ci*kh + i)*kw + j, and oh*ow
// columns, column oy*ow + ox, so that conv is W[out][K] * col[K][oh*ow] per group.
#include <cstdint>

#include "math/hd.hpp"

namespace kiln::math {

// One sample's convolution geometry. Only the top and left padding appear: the bottom and
// right padding are implied by oh and ow (reads past the input are zeros either way).
struct ConvGeom {
  std::int64_t c = 0, h = 0, w = 0;  // input channels (all groups), height, width
  std::int64_t oh = 0, ow = 0;
  std::int64_t kh = 1, kw = 1;
  std::int64_t sh = 1, sw = 1;
  std::int64_t ph = 0, pw = 0;  // top, left
  std::int64_t dh = 1, dw = 1;

  KILN_HD std::int64_t rows() const { return c * kh * kw; }
  KILN_HD std::int64_t pixels() const { return oh * ow; }
  // A 1x1 kernel with stride 1 and no padding reads the input as it is: no im2col needed.
  KILN_HD bool pointwise() const {
    return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0 && oh == h && ow == w;
  }
};

// Floor and ceiling of a / b for b > 0 and a of either sign.
KILN_HD std::int64_t floor_div_pos(std::int64_t a, std::int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
KILN_HD std::int64_t ceil_div_pos(std::int64_t a, std::int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// The input coordinate that output coordinate o reads through tap k (outside [0, in): padding).
KILN_HD std::int64_t conv_source(std::int64_t o, std::int64_t k, std::int64_t stride, std::int64_t pad,
                                 std::int64_t dil) {
  return o * stride - pad + k * dil;
}

// The outputs [begin, end) whose source through tap k lies inside the input; 0 <= begin <=
// end <= out. Outputs outside the range read padding. Lets the CPU loops copy a run of
// valid values without testing every element.
struct Range {
  std::int64_t begin = 0, end = 0;
};
KILN_HD Range conv_valid(std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride, std::int64_t pad,
                         std::int64_t dil) {
  // Stride 1 is the common case, and two 64-bit divisions per tap are not free in CPU loops.
  std::int64_t b = stride == 1 ? pad - k * dil : ceil_div_pos(pad - k * dil, stride);
  std::int64_t e = stride == 1 ? in + pad - k * dil : floor_div_pos(in - 1 + pad - k * dil, stride) + 1;
  b = b < 0 ? 0 : (b > out ? out : b);
  e = e < b ? b : (e > out ? out : e);
  return {b, e};
}

// The output coordinate whose source through tap k is input coordinate i, or -1 when no
// output reads i through k (col2im as a gather, one input element per thread).
KILN_HD std::int64_t conv_reader(std::int64_t i, std::int64_t out, std::int64_t k, std::int64_t stride,
                                 std::int64_t pad, std::int64_t dil) {
  std::int64_t t = i + pad - k * dil;
  if (t < 0 || t % stride != 0) return -1;
  t /= stride;
  return t < out ? t : -1;
}

// Row of the column matrix for input channel ci and tap (i, j).
KILN_HD std::int64_t col_row(const ConvGeom& g, std::int64_t ci, std::int64_t i, std::int64_t j) {
  return (ci * g.kh + i) * g.kw + j;
}

// The offset within one sample's c*h*w input that column-matrix entry (row, pixel) reads,
// pixel = oy*ow + ox; -1 for padding.
KILN_HD std::int64_t im2col_source(const ConvGeom& g, std::int64_t row, std::int64_t pixel) {
  std::int64_t j = row % g.kw, i = (row / g.kw) % g.kh, ci = row / (g.kw * g.kh);
  std::int64_t y = conv_source(pixel / g.ow, i, g.sh, g.ph, g.dh);
  std::int64_t x = conv_source(pixel % g.ow, j, g.sw, g.pw, g.dw);
  if (y < 0 || y >= g.h || x < 0 || x >= g.w) return -1;
  return (ci * g.h + y) * g.w + x;
}

}  // namespace kiln::math
