#include "train/init.hpp"

#include <cmath>
#include <vector>

#include "math/rng.hpp"

namespace kiln::detail {

void init_params(Executor& executor, std::uint64_t seed) {
  const Graph& graph = executor.graph();
  auto params = graph.params();
  for (std::size_t p = 0; p < params.size(); ++p) {
    const Param& param = params[p];
    const Layer& layer = graph.layers()[static_cast<std::size_t>(param.layer)];
    std::vector<float> values(static_cast<std::size_t>(param.elements));
    if (layer.op == OpKind::batchnorm) {
      float v = (param.role == ParamRole::weight || param.role == ParamRole::running_var) ? 1.0f : 0.0f;
      std::fill(values.begin(), values.end(), v);
    } else {
      // fan_in: everything but the output dimension of the layer's weight.
      const Param& weight = params[static_cast<std::size_t>(layer.params[0])];
      std::int64_t fan_in = 1;
      for (std::size_t d = 1; d < weight.dims.size(); ++d) fan_in *= weight.dims[d];
      const float bound = fan_in > 0 ? 1.0f / std::sqrt(static_cast<float>(fan_in)) : 0.0f;
      const std::uint64_t key = math::stream_key(seed, math::kStreamInit, p);
      for (std::size_t e = 0; e < values.size(); ++e) values[e] = (2.0f * math::random_uniform(key, e) - 1.0f) * bound;
    }
    executor.write_param(p, values);
  }
}

}  // namespace kiln::detail
