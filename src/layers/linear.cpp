// linear: PyTorch's Linear on a vector of features; weight [out, in].
#include <fmt/format.h>

#include "graph/op_def.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {{"out", KeyType::integer, true}, {"bias", KeyType::boolean}, {"in", KeyType::integer}};

std::optional<Shape> infer(ShapeCtx& ctx) {
  const Attrs& a = ctx.layer.attrs;
  const Shape& in = ctx.in();
  bool ok = true;
  if (a.out < 1) ok = false, ctx.error(fmt::format("out must be at least 1, got {}", a.out));
  if (in.is_image()) {
    ctx.error(fmt::format("expects a vector of features (2-D with the batch), but its input '{}' is {} (4-D with the batch)",
                          ctx.input().name, in.str()),
              {}, fmt::format("add {{op: flatten}} before it: {} flattens to {} features", in.str(), in.elements()));
    return std::nullopt;
  }
  if (a.in && *a.in != in.c) {
    std::vector<std::string> notes;
    const Layer& src = ctx.input();
    if (src.op == OpKind::flatten) {
      const Layer& flat_in = ctx.before[static_cast<std::size_t>(src.inputs[0])];
      notes.push_back(fmt::format("'{}' flattens '{}' ({}) to {} features", src.name, flat_in.name, flat_in.shape.str(), in.c));
    }
    notes.push_back(fmt::format("at run time this is PyTorch's \"mat1 and mat2 shapes cannot be multiplied (Bx{} and {}x{})\"",
                                in.c, *a.in, a.out));
    ok = false, ctx.error(fmt::format("declares in: {}, but its input '{}' has {} features", *a.in, src.name, in.c),
                          std::move(notes), fmt::format("set in: {}, or remove 'in' to infer it", in.c));
  }
  if (!ok) return std::nullopt;
  return Shape::vec(a.out);
}

void params(const Layer& layer, std::span<const Layer> before, std::vector<Param>& out) {
  std::int64_t in_c = before[static_cast<std::size_t>(layer.inputs[0])].shape.c;
  out.push_back({layer.name + ".weight", layer.index, ParamRole::weight, {layer.attrs.out, in_c}});
  if (layer.attrs.bias) out.push_back({layer.name + ".bias", layer.index, ParamRole::bias, {layer.attrs.out}});
}

std::optional<std::int64_t> flops(const Layer& layer, std::span<const Layer> before) {
  std::int64_t in_c = before[static_cast<std::size_t>(layer.inputs[0])].shape.c;
  return checked_product({2, in_c, layer.attrs.out});
}

BackwardNeeds needs(const Layer& layer) { return {.input = !layer.attrs.frozen, .output = false}; }

}  // namespace

const OpDef& linear_op() {
  static const OpDef def{OpKind::linear, "linear", kKeys, 1, 1, true, infer, params, flops, needs};
  return def;
}

}  // namespace kiln::detail
