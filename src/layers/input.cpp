// input: the model input, layer 0 of every graph; its shape is the spec's `input`.
#include "graph/op_def.hpp"

namespace kiln::detail {

namespace {

std::optional<std::int64_t> no_flops(const Layer&, std::span<const Layer>) { return 0; }

BackwardNeeds needs(const Layer&) { return {}; }

}  // namespace

const OpDef& input_op() {
  static const OpDef def{OpKind::input, "input", {}, 0, 0, false, nullptr, nullptr, no_flops, needs};
  return def;
}

}  // namespace kiln::detail
