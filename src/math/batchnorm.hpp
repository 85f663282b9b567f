#pragma once

// Batch normalization's per-channel arithmetic, PyTorch's (aten/src/ATen/native/batch_norm.cpp
// and cpu/batch_norm_kernel.cpp), shared by the CPU and CUDA backends. Statistics are
// accumulated in double, as PyTorch's CPU kernels do for float.
#include <cmath>
#include <cstdint>

#include "math/hd.hpp"

namespace kiln::math {

// running = (1 - momentum) * running + momentum * batch, PyTorch's meaning of momentum.
KILN_HD double bn_running(double running, double batch, double momentum) {
  return (1.0 - momentum) * running + momentum * batch;
}

// The unbiased variance the running statistic tracks, from the biased one over `count`
// values. A single value has no unbiased variance (PyTorch refuses to train on it); its
// biased variance, 0, is kept instead of a division by zero.
KILN_HD double bn_unbiased(double biased, std::int64_t count) {
  return count > 1 ? biased * static_cast<double>(count) / static_cast<double>(count - 1) : biased;
}

KILN_HD double bn_invstd(double var, double eps) { return 1.0 / sqrt(var + eps); }

// The forward is y = x * alpha + beta per channel, as PyTorch's CPU kernel computes it.
struct BnAffine {
  float alpha = 1.0f;
  float beta = 0.0f;
};

KILN_HD BnAffine bn_affine(double mean, double invstd, float weight, float bias) {
  double alpha = invstd * static_cast<double>(weight);
  return {static_cast<float>(alpha), static_cast<float>(static_cast<double>(bias) - mean * alpha)};
}

// Training backward of one channel over `count` values, from sum(dy) and sum(dy * (x - mean)):
// dx = (dy - (x - mean) * proj - mean_dy) * scale.
struct BnBackward {
  float mean = 0.0f;
  float proj = 0.0f;
  float mean_dy = 0.0f;
  float scale = 0.0f;
};

KILN_HD BnBackward bn_backward(double mean, double invstd, float weight, double sum_dy, double sum_dy_xmu,
                               std::int64_t count) {
  double m = static_cast<double>(count);
  return {static_cast<float>(mean), static_cast<float>(sum_dy_xmu * invstd * invstd / m), static_cast<float>(sum_dy / m),
          static_cast<float>(invstd * static_cast<double>(weight))};
}

KILN_HD float bn_grad_input(float x, float dy, BnBackward b) { return (dy - (x - b.mean) * b.proj - b.mean_dy) * b.scale; }

}  // namespace kiln::math
