#pragma once

// Group normalization's arithmetic, PyTorch's (aten/src/ATen/native/group_norm.cpp): each
// sample's channels fall into `groups` groups of C/groups channels; a group's values (its
// channels over height and width) are normalized by their own mean and biased variance,
// then each channel is scaled and shifted by its weight and bias. Shared by the CPU and
// CUDA backends; sums are accumulated in double.
#include <cmath>
#include <cstdint>

#include "math/hd.hpp"
#include "math/layout.hpp"

namespace kiln::math {

// Value j (0 <= j < group_size) of group g of sample n, in (channel, h, w) order.
struct Groups {
  Dims4 dims;
  std::int64_t groups = 1;

  KILN_HD std::int64_t channels() const { return dims.c / groups; }
  KILN_HD std::int64_t size() const { return channels() * dims.h * dims.w; }
  KILN_HD std::int64_t count() const { return dims.n * groups; }
  KILN_HD std::int64_t channel(std::int64_t g, std::int64_t j) const { return g * channels() + j / (dims.h * dims.w); }
  KILN_HD std::int64_t at(std::int64_t n, std::int64_t g, std::int64_t j) const {
    const std::int64_t hw = dims.h * dims.w, s = j % hw;
    return dims.at(n, channel(g, j), s / dims.w, s % dims.w);
  }
};

KILN_HD double gn_invstd(double var, double eps) { return 1.0 / sqrt(var + eps); }

// Backward of one group over `count` values, from sum(dy * w) and sum(dy * w * xhat) where
// xhat = (x - mean) * invstd: dx = (dy * w - mean_dyw - xhat * mean_dyw_xhat) * invstd.
struct GnBackward {
  double mean = 0.0, invstd = 0.0, mean_dyw = 0.0, mean_dyw_xhat = 0.0;
};

KILN_HD GnBackward gn_backward(double mean, double invstd, double sum_dyw, double sum_dyw_xhat, std::int64_t count) {
  const double m = static_cast<double>(count);
  return {mean, invstd, sum_dyw / m, sum_dyw_xhat / m};
}

KILN_HD float gn_grad_input(float x, float dy, float weight, const GnBackward& b) {
  const double xhat = (x - b.mean) * b.invstd;
  return static_cast<float>((static_cast<double>(dy) * weight - b.mean_dyw - xhat * b.mean_dyw_xhat) * b.invstd);
}

KILN_HD float gn_forward(float x, double mean, double invstd, float weight, float bias) {
  return static_cast<float>((x - mean) * invstd * weight + bias);
}

}  // namespace kiln::math
