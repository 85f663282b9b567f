// input: the model input, layer 0 of every graph; its shape is the spec's `input`.
#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"

namespace kiln::detail {

namespace {

std::optional<std::int64_t> no_flops(const Layer&, std::span<const Layer>) { return 0; }

BackwardNeeds needs(const Layer&) { return {}; }

}  // namespace

const OpDef& input_op() {
  static const OpDef def{
      .kind = OpKind::input,
      .name = "input",
      .min_inputs = 0,
      .max_inputs = 0,
      .flops = no_flops,
      .backward_needs = needs,
  };
  return def;
}

const CpuOp& input_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::input,
      .supports = cpu_runs_every_dtype,
  };
  return entry;
}

}  // namespace kiln::detail
