#include "graph/op_def.hpp"

#include <fmt/format.h>

#include "util/checked.hpp"

namespace kiln::detail {

namespace {

std::string hw_text(Hw v) { return v.h == v.w ? fmt::format("{}", v.h) : fmt::format("{}x{}", v.h, v.w); }

std::string pad_text(const Padding& p) {
  if (p.same) return "same";
  if (p.top == p.bottom && p.left == p.right) return hw_text({p.top, p.left});
  return fmt::format("{},{},{},{}", p.top, p.bottom, p.left, p.right);
}

}  // namespace

std::string describe_layer(const Layer& layer, bool geometry) {
  const Attrs& a = layer.attrs;
  std::string name(op_def(layer.op).name);
  switch (layer.op) {
    case OpKind::conv:
    case OpKind::maxpool:
    case OpKind::avgpool: {
      std::string out = fmt::format("{} {}x{}", name, a.kernel.h, a.kernel.w);
      if (!geometry) return out;
      Hw stride = a.stride.value_or(layer.op == OpKind::conv ? Hw{1, 1} : a.kernel);
      out += fmt::format(", stride {}, pad {}", hw_text(stride), pad_text(a.pad));
      if (a.dilation != Hw{1, 1} && layer.op == OpKind::conv) out += fmt::format(", dilation {}", hw_text(a.dilation));
      if (a.groups != 1 && layer.op == OpKind::conv) out += fmt::format(", groups {}", a.groups);
      if (a.ceil && layer.op != OpKind::conv) out += ", ceil";
      return out;
    }
    case OpKind::linear: return fmt::format("linear, out {}", a.out);
    default: {
      const auto describe = op_def(layer.op).describe;
      return describe ? describe(layer) : name;
    }
  }
}

std::string ShapeCtx::describe_input(std::size_t i) const {
  const Layer& src = input(i);
  const char* kind = src.shape.is_image() ? "" : " features";
  return fmt::format("input '{}' is {}{}", src.name, src.shape.str(), kind);
}

void ShapeCtx::error(std::string message, std::vector<std::string> notes, std::string hint, bool geometry) const {
  Diagnostic d;
  d.loc = layer.loc;
  d.layer = layer.name;
  d.context = describe_layer(layer, geometry);
  d.message = std::move(message);
  d.notes = std::move(notes);
  d.hint = std::move(hint);
  diagnostics.push_back(std::move(d));
}

bool ShapeCtx::require_image() const {
  for (std::size_t i = 0; i < layer.inputs.size(); ++i) {
    if (in(i).is_image()) continue;
    error(fmt::format("expects a C x H x W input (4-D with the batch), but its input '{}' is a vector of {} "
                      "features (2-D with the batch)",
                      input(i).name, in(i).c),
          {}, fmt::format("{} works on feature maps; move it before the flatten, or use linear", op_def(layer.op).name));
    return false;
  }
  return true;
}

std::optional<std::int64_t> elementwise_flops(const Layer& layer, std::span<const Layer>) {
  return layer.shape.elements();
}

}  // namespace kiln::detail
