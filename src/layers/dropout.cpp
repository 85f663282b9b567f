// dropout: inverted dropout; the mask is a counter-based hash of (seed, step, element), so
// backward regenerates it instead of storing it.
#include <fmt/format.h>

#include "graph/op_def.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {{"p", KeyType::number}};

std::optional<Shape> infer(ShapeCtx& ctx) {
  double p = ctx.layer.attrs.p;
  if (!(p >= 0 && p < 1)) {
    ctx.error(fmt::format("p must be in [0, 1), got {}", p), {}, "p is the probability of zeroing an element");
    return std::nullopt;
  }
  return ctx.in();
}

BackwardNeeds needs(const Layer&) { return {}; }

}  // namespace

const OpDef& dropout_op() {
  static const OpDef def{OpKind::dropout, "dropout", kKeys, 1, 1, false, infer, nullptr, elementwise_flops, needs};
  return def;
}

}  // namespace kiln::detail
