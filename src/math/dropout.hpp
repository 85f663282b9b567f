#pragma once

// Inverted dropout's mask, shared by the CPU and CUDA backends: a pure function of the
// layer's key for the step and the element's index in the batch, so backward regenerates it.
#include <cstdint>

#include "math/hd.hpp"
#include "math/rng.hpp"

namespace kiln::math {

// The multiplier of element `index`: 0 with probability p, else 1 / (1 - p) (`scale`).
KILN_HD float dropout_multiplier(std::uint64_t key, std::uint64_t index, float p, float scale) {
  return random_uniform(key, index) >= p ? scale : 0.0f;
}

}  // namespace kiln::math
