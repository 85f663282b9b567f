#pragma once

// Softmax cross-entropy with label smoothing, one sample (a row of `classes` logits),
// PyTorch's F.cross_entropy(label_smoothing=eps): the target distribution is
// (1 - eps) * onehot(label) + eps / classes.
#include <cmath>

#include "math/hd.hpp"

namespace kiln::math {

struct SampleLoss {
  float loss = 0.0f;
  bool correct = false;
};

// Returns the loss of the row and whether its argmax (the first maximum) is the label;
// writes d(loss)/d(logits) * grad_scale into `grad` when it is not null. L and G: float, or
// a CUDA kernel's half type (logits read as float, the gradient rounded where stored).
template <class L, class G>
KILN_HD SampleLoss softmax_cross_entropy(const L* logits, int classes, int label, float smoothing, float grad_scale,
                                         G* grad) {
  auto logit = [&](int k) { return static_cast<float>(logits[k]); };
  float max = logit(0);
  int argmax = 0;
  for (int k = 1; k < classes; ++k)
    if (logit(k) > max) max = logit(k), argmax = k;
  float sum = 0.0f;
  for (int k = 0; k < classes; ++k) sum += expf(logit(k) - max);
  float log_sum = logf(sum);
  float off = smoothing / static_cast<float>(classes);
  float loss = 0.0f;
  for (int k = 0; k < classes; ++k) {
    float logp = logit(k) - max - log_sum;
    float target = off + (k == label ? 1.0f - smoothing : 0.0f);
    loss -= target * logp;
    if (grad) grad[k] = static_cast<G>((expf(logp) - target) * grad_scale);
  }
  return {loss, argmax == label};
}

KILN_HD SampleLoss softmax_cross_entropy(const float* logits, int classes, int label, float smoothing, float grad_scale,
                                         float* grad) {
  return softmax_cross_entropy<float, float>(logits, classes, label, smoothing, grad_scale, grad);
}

}  // namespace kiln::math
