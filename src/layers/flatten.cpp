// flatten: C x H x W -> C*H*W features, channel-major like PyTorch; a view of its input.
#include "graph/op_def.hpp"

namespace kiln::detail {

namespace {

std::optional<Shape> infer(ShapeCtx& ctx) { return Shape::vec(ctx.in().elements()); }

std::optional<std::int64_t> no_flops(const Layer&, std::span<const Layer>) { return 0; }

BackwardNeeds needs(const Layer&) { return {}; }

}  // namespace

const OpDef& flatten_op() {
  static const OpDef def{OpKind::flatten, "flatten", {}, 1, 1, false, infer, nullptr, no_flops, needs};
  return def;
}

}  // namespace kiln::detail
