#pragma once

// Accuracy, loss, per-class accuracy and the confusion matrix of a plan's weights on a
// dataset: the totals the Trainer, `kiln eval` and kiln::Plan::evaluate all report.
#include <vector>

#include "kiln/train.hpp"
#include "math/augment.hpp"
#include "plan/compiled_plan.hpp"

namespace kiln::detail {

struct EvalOptions {
  // airbench's test-time augmentation: the net on the image and its mirror (weight 0.5
  // together), and on copies translated by (-1, -1) and (+1, +1) with reflect padding, each
  // with its mirror (0.25 each).
  bool tta = false;
  float label_smoothing = 0.0f;  // of the targets of the reported loss
};

// `data` in file order, no augmentation but the test-time views; throws GraphError or
// DataError (check_dataset) when the dataset does not fit the plan's graph.
Evaluation evaluate(CompiledPlan& plan, const Dataset& data, const EvalOptions& options);

// The views of the test-time augmentation and their weights.
struct TtaView {
  math::AugmentParams params;
  double weight;
};
std::vector<TtaView> tta_views(bool tta);

// Logits of `n` images (CompiledPlan::predict), averaged over the test-time views with
// their weights when `tta` (the views and weights evaluate() uses), so a prediction and an
// evaluation of the same image agree.
std::vector<float> predict(CompiledPlan& plan, const std::uint8_t* images, std::int64_t n, bool tta);

}  // namespace kiln::detail
