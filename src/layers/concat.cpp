// concat: joins tensors along channels (features for vectors); same height and width.
#include <fmt/format.h>

#include "graph/op_def.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

std::optional<Shape> infer(ShapeCtx& ctx) {
  Shape out = ctx.in(0);
  for (std::size_t i = 1; i < ctx.layer.inputs.size(); ++i) {
    const Shape& s = ctx.in(i);
    if (s.rank != out.rank || s.h != out.h || s.w != out.w) {
      ctx.error(fmt::format("cannot concatenate '{}' ({}) and '{}' ({}): {}", ctx.input(0).name, ctx.in(0).str(),
                            ctx.input(i).name, s.str(),
                            s.rank != out.rank ? "one is a feature map, the other a vector" : "height and width differ"),
                {}, "concat joins channels; every input needs the same height and width");
      return std::nullopt;
    }
    auto c = checked_add(out.c, s.c);
    if (!c) {
      ctx.error("the total number of channels overflows 64 bits");
      return std::nullopt;
    }
    out.c = *c;
  }
  return out;
}

std::optional<std::int64_t> no_flops(const Layer&, std::span<const Layer>) { return 0; }

BackwardNeeds needs(const Layer&) { return {}; }

}  // namespace

const OpDef& concat_op() {
  static const OpDef def{OpKind::concat, "concat", {}, 2, 64, false, infer, nullptr, no_flops, needs};
  return def;
}

}  // namespace kiln::detail
