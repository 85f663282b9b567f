#pragma once

// One SGD step for one parameter element, as torch.optim.SGD (dampening 0): coupled weight
// decay added to the gradient, momentum buffer, optional Nesterov; decoupled decay (as
// AdamW's) shrinks the weight by lr * decay before the step.
#include "math/hd.hpp"

namespace kiln::math {

struct SgdHyper {
  float lr = 0.0f;
  float momentum = 0.0f;
  float weight_decay = 0.0f;     // coupled: added to the gradient (PyTorch's weight_decay)
  float decoupled_decay = 0.0f;  // decoupled: w -= lr * decoupled_decay * w
  bool nesterov = false;
};

KILN_HD void sgd_update(float& w, float& buf, float grad, const SgdHyper& h) {
  if (h.decoupled_decay != 0.0f) w -= h.lr * h.decoupled_decay * w;
  float g = grad + h.weight_decay * w;
  if (h.momentum != 0.0f) {
    buf = h.momentum * buf + g;
    g = h.nesterov ? g + h.momentum * buf : buf;
  }
  w -= h.lr * g;
}

}  // namespace kiln::math
