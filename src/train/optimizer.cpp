#include "train/optimizer.hpp"

namespace kiln::detail {

std::vector<math::SgdHyper> sgd_hyper(const Graph& graph, const TrainConfig& config, double factor, std::int64_t epoch) {
  auto params = graph.params();
  std::vector<math::SgdHyper> hyper(params.size());
  for (std::size_t p = 0; p < params.size(); ++p) {
    const Attrs& a = graph.layers()[static_cast<std::size_t>(params[p].layer)].attrs;
    if (a.train_epochs && static_cast<double>(epoch) >= *a.train_epochs) continue;  // keeps its weights: no step, no decay
    math::SgdHyper& h = hyper[p];
    const double peak = config.lr * a.lr_scale;
    h.lr = static_cast<float>(peak * factor);
    h.momentum = static_cast<float>(config.momentum);
    h.nesterov = config.nesterov;
    switch (config.decay_mode) {
      case DecayMode::coupled: h.weight_decay = static_cast<float>(config.weight_decay); break;
      case DecayMode::decoupled: h.decoupled_decay = static_cast<float>(config.weight_decay); break;
      case DecayMode::lr_independent:
        // airbench: PyTorch's coupled decay with coefficient decay / (group lr), so that the
        // applied decay lr_t * coef * w = decay * factor * w whatever the group's rate.
        h.weight_decay = peak > 0 ? static_cast<float>(config.weight_decay / peak) : 0.0f;
        break;
    }
  }
  return hyper;
}

}  // namespace kiln::detail
