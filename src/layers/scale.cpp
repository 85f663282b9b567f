// scale: multiplies by a constant `factor` (airbench's final 1/9).
#include <cmath>
#include <fmt/format.h>

#include "graph/op_def.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {{"factor", KeyType::number, true}};

std::optional<Shape> infer(ShapeCtx& ctx) {
  if (!std::isfinite(ctx.layer.attrs.factor)) {
    ctx.error(fmt::format("factor must be finite, got {}", ctx.layer.attrs.factor));
    return std::nullopt;
  }
  return ctx.in();
}

BackwardNeeds needs(const Layer&) { return {}; }

}  // namespace

const OpDef& scale_op() {
  static const OpDef def{OpKind::scale, "scale", kKeys, 1, 1, false, infer, nullptr, elementwise_flops, needs};
  return def;
}

}  // namespace kiln::detail
