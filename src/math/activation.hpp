#pragma once

// Element-wise activations and their derivatives, shared by the CPU and CUDA backends.
// Backward functions take what the memory plan keeps for them (OpDef::backward_needs):
// the output y for relu, sigmoid and tanh; the input x for leaky_relu, gelu and silu.
#include <cmath>

#include "math/hd.hpp"

namespace kiln::math {

KILN_HD float relu_fwd(float x) { return x > 0.0f ? x : 0.0f; }
KILN_HD float relu_bwd(float y, float dy) { return y > 0.0f ? dy : 0.0f; }

KILN_HD float leaky_relu_fwd(float x, float slope) { return x > 0.0f ? x : x * slope; }
KILN_HD float leaky_relu_bwd(float x, float dy, float slope) { return x > 0.0f ? dy : dy * slope; }

// Exact GELU (PyTorch's default, approximate='none'): x * Phi(x).
KILN_HD float gelu_fwd(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
KILN_HD float gelu_bwd(float x, float dy) {
  float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
  float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
  return dy * (cdf + x * pdf);
}

KILN_HD float sigmoid_fwd(float x) { return 1.0f / (1.0f + expf(-x)); }
KILN_HD float sigmoid_bwd(float y, float dy) { return dy * y * (1.0f - y); }

KILN_HD float silu_fwd(float x) { return x * sigmoid_fwd(x); }
KILN_HD float silu_bwd(float x, float dy) {
  float s = sigmoid_fwd(x);
  return dy * s * (1.0f + x * (1.0f - s));
}

KILN_HD float tanh_fwd(float x) { return tanhf(x); }
KILN_HD float tanh_bwd(float y, float dy) { return dy * (1.0f - y * y); }

}  // namespace kiln::math
