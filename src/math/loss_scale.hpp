#pragma once

// fp16's dynamic loss scale (PyTorch's GradScaler), one rule for the CPU executor and the
// CUDA kernels (cuda/kernels/cast.cu): the loss gradient is multiplied by the scale before
// backward and the parameter gradients divided by it before the update.
#include <cstdint>

#include "math/hd.hpp"

namespace kiln::math {

// Whether a step whose parameter gradients are `nonfinite` at `scale` skips its update: an
// overflow above scale 1 is the scale's doing; at 1 or less it is a divergence.
KILN_HD bool loss_scale_skips(bool nonfinite, float scale) { return nonfinite && scale > 1.0f; }

// After a step's update (or its skip): a skipped step halves the scale; `interval` good steps
// in a row double it. `good_steps` counts the good steps since the scale last changed.
KILN_HD void loss_scale_advance(float& scale, std::int64_t& good_steps, bool skipped, std::int64_t interval) {
  if (skipped) {
    scale *= 0.5f;
    good_steps = 0;
  } else if (++good_steps >= interval) {
    scale *= 2.0f;
    good_steps = 0;
  }
}

}  // namespace kiln::math
