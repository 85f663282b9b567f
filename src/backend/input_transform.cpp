// The normalization of model inputs, checked where a program hands it in.
#include <cmath>

#include <fmt/format.h>

#include "backend/executor.hpp"
#include "kiln/error.hpp"

namespace kiln::detail {

InputTransform make_input_transform(const Graph& graph, const std::vector<float>& mean, const std::vector<float>& std,
                                    math::PadMode pad) {
  const auto channels = static_cast<std::size_t>(graph.input_shape().c);
  if (mean.size() != channels || std.size() != channels)
    throw UsageError(fmt::format("normalization has {} mean and {} std values but model '{}' has {} input channels",
                                 mean.size(), std.size(), graph.name(), channels));
  InputTransform t;
  t.pad = pad;
  t.mean = mean;
  for (std::size_t c = 0; c < channels; ++c) {
    if (!std::isfinite(mean[c]) || !(std[c] > 0.0f) || !std::isfinite(std[c]))
      throw UsageError(fmt::format("normalization of channel {}: mean {} and std {}; the std must be positive and both finite",
                                   c, mean[c], std[c]));
    t.inv_std.push_back(1.0f / std[c]);
  }
  return t;
}

}  // namespace kiln::detail
