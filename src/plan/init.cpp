// PyTorch's default initialization of every parameter and buffer, keyed by the seed, so
// that a Trainer and a kiln::Plan compiled with the same seed hold the same weights.
#include "plan/init.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "graph/op_def.hpp"
#include "math/rng.hpp"

namespace kiln::detail {

void init_params(Executor& executor, std::uint64_t seed) {
  const Graph& graph = executor.graph();
  auto params = graph.params();
  for (std::size_t p = 0; p < params.size(); ++p) {
    const Param& param = params[p];
    const Layer& layer = graph.layers()[static_cast<std::size_t>(param.layer)];
    std::vector<float> values(static_cast<std::size_t>(param.elements));
    const auto initial_value = op_def(layer.op).initial_value;
    if (initial_value) {
      std::fill(values.begin(), values.end(), initial_value(param.role));
    } else {
      // fan_in: everything but the output dimension of the layer's weight.
      const Param& weight = params[static_cast<std::size_t>(layer.params[0])];
      std::int64_t fan_in = 1;
      for (std::size_t d = 1; d < weight.dims.size(); ++d) fan_in *= weight.dims[d];
      const float bound = fan_in > 0 ? 1.0f / std::sqrt(static_cast<float>(fan_in)) : 0.0f;
      const std::uint64_t key = math::stream_key(seed, math::kStreamInit, p);
      for (std::size_t e = 0; e < values.size(); ++e) values[e] = (2.0f * math::random_uniform(key, e) - 1.0f) * bound;
      if (layer.op == OpKind::conv && layer.attrs.init == Attrs::Init::dirac && param.role == ParamRole::weight) {
        // torch.nn.init.dirac_(w[:in]): filter k (k < in) passes channel k through its centre.
        const auto& d = param.dims;  // [out, in, kh, kw]
        const std::int64_t filter = d[1] * d[2] * d[3];
        for (std::int64_t k = 0; k < std::min(d[0], d[1]); ++k) {
          std::fill_n(values.begin() + k * filter, filter, 0.0f);
          values[static_cast<std::size_t>(k * filter + (k * d[2] + d[2] / 2) * d[3] + d[3] / 2)] = 1.0f;
        }
      }
    }
    executor.write_param(p, values);
  }
}

}  // namespace kiln::detail
