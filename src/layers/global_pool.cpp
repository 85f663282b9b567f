// global_avgpool, global_maxpool: PyTorch's adaptive pooling to 1x1; the output is C x 1 x 1.
#include "graph/op_def.hpp"

namespace kiln::detail {

namespace {

std::optional<Shape> infer(ShapeCtx& ctx) {
  if (!ctx.require_image()) return std::nullopt;
  return Shape::chw(ctx.in().c, 1, 1);
}

std::optional<std::int64_t> flops(const Layer& layer, std::span<const Layer> before) {
  return before[static_cast<std::size_t>(layer.inputs[0])].shape.elements();
}

BackwardNeeds avg_needs(const Layer&) { return {}; }
BackwardNeeds max_needs(const Layer&) { return {.input = true, .output = true}; }

}  // namespace

const OpDef& global_avgpool_op() {
  static const OpDef def{OpKind::global_avgpool, "global_avgpool", {}, 1, 1, false, infer, nullptr, flops, avg_needs};
  return def;
}

const OpDef& global_maxpool_op() {
  static const OpDef def{OpKind::global_maxpool, "global_maxpool", {}, 1, 1, false, infer, nullptr, flops, max_needs};
  return def;
}

}  // namespace kiln::detail
