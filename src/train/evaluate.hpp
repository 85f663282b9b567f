#pragma once

#include "backend/executor.hpp"
#include "kiln/train.hpp"

namespace kiln::detail {

// Accuracy, loss, per-class accuracy and the confusion matrix of `data` (in file order, no
// augmentation). With config.tta: airbench's test-time augmentation — the net on the image
// and its mirror (weight 0.5 together), and on copies translated by (-1, -1) and (+1, +1)
// with reflect padding, each with its mirror (0.25 each).
Evaluation evaluate_dataset(Executor& executor, const TrainConfig& config, const Dataset& data);

// The views of the test-time augmentation and their weights.
struct TtaView {
  math::AugmentParams params;
  double weight;
};
std::vector<TtaView> tta_views(bool tta);

}  // namespace kiln::detail
