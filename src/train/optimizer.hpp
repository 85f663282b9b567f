#pragma once

#include <cstdint>
#include <vector>

#include "kiln/train.hpp"
#include "math/sgd.hpp"

namespace kiln::detail {

// The SGD hyperparameters of every parameter at one step: lr = config.lr * `factor` (the
// schedule's) * the layer's lr_scale; the decay by config.decay_mode; nothing at all for a
// layer past its train_epochs in `epoch`.
std::vector<math::SgdHyper> sgd_hyper(const Graph& graph, const TrainConfig& config, double factor, std::int64_t epoch);

}  // namespace kiln::detail
