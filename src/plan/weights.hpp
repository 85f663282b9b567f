#pragma once

// A compiled plan's weights as a PyTorch-loadable safetensors file, and back.
#include <cstdint>
#include <string>

#include "kiln/checkpoint.hpp"
#include "plan/compiled_plan.hpp"

namespace kiln::detail {

// What param_tensor() reads of a parameter: its values, its momentum or its lookahead average.
enum class ParamSlot : std::uint8_t { weight, momentum, ema };

// Parameter `index` of the plan's graph, with its PyTorch dims, under `name`.
NamedTensor param_tensor(const CompiledPlan& plan, std::size_t index, const std::string& name, ParamSlot slot);

// Parameters and buffers under their PyTorch names, plus `<bn>.num_batches_tracked`.
SafetensorsFile weights_file(const CompiledPlan& plan, std::int64_t batches_tracked);
// Loads weights into the plan, after match_weights() checked every name and shape.
void load_weights_file(CompiledPlan& plan, const SafetensorsFile& file, const std::string& path);

}  // namespace kiln::detail
