// add: element-wise sum of two or more tensors of identical shape (residual connections).
#include <fmt/format.h>

#include "graph/op_def.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

std::string shortcut_hint(const Shape& a, const Shape& b) {
  if (a.is_image() && b.is_image() && a.h != b.h && b.h > 0 && a.h % b.h == 0)
    return fmt::format("add needs identical shapes; to match {} to {}, project it with a 1x1 conv, out: {}, stride: {}",
                       a.str(), b.str(), b.c, a.h / b.h);
  if (a.is_image() && b.is_image() && a.h == b.h && a.w == b.w)
    return fmt::format("add needs identical shapes; project one side with a 1x1 conv to {} channels", b.c);
  return "add needs identical shapes";
}

std::optional<Shape> infer(ShapeCtx& ctx) {
  const Shape& first = ctx.in(0);
  for (std::size_t i = 1; i < ctx.layer.inputs.size(); ++i) {
    const Shape& s = ctx.in(i);
    if (s == first) continue;
    ctx.error(fmt::format("cannot add '{}' ({}) and '{}' ({}): shapes differ", ctx.input(0).name, first.str(),
                          ctx.input(i).name, s.str()),
              {}, shortcut_hint(s, first));
    return std::nullopt;
  }
  return first;
}

std::optional<std::int64_t> flops(const Layer& layer, std::span<const Layer>) {
  return checked_mul(layer.shape.elements(), static_cast<std::int64_t>(layer.inputs.size()) - 1);
}

BackwardNeeds needs(const Layer&) { return {}; }

}  // namespace

const OpDef& add_op() {
  static const OpDef def{OpKind::add, "add", {}, 2, 64, false, infer, nullptr, flops, needs};
  return def;
}

}  // namespace kiln::detail
