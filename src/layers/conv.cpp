// conv: 2-D convolution (cross-correlation), PyTorch's Conv2d.
#include <fmt/format.h>

#include "graph/op_def.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {
    {"out", KeyType::integer, true},     {"kernel", KeyType::int_pair, true}, {"stride", KeyType::int_pair},
    {"pad", KeyType::padding},           {"dilation", KeyType::int_pair},     {"groups", KeyType::integer},
    {"bias", KeyType::boolean},          {"in", KeyType::integer},
};

std::string plural(std::int64_t n, const char* word) { return fmt::format("{} {}{}", n, word, n == 1 ? "" : "s"); }

std::string hw(std::int64_t h, std::int64_t w) { return h == w ? fmt::format("{}", h) : fmt::format("{}x{}", h, w); }

std::optional<Shape> infer(ShapeCtx& ctx) {
  Attrs& a = ctx.layer.attrs;
  if (!ctx.require_image()) return std::nullopt;
  const Shape& in = ctx.in();
  bool ok = true;
  if (a.out < 1) ok = false, ctx.error(fmt::format("out must be at least 1, got {}", a.out));
  if (a.kernel.h < 1 || a.kernel.w < 1)
    ok = false, ctx.error(fmt::format("kernel must be at least 1, got {}x{}", a.kernel.h, a.kernel.w));
  Hw stride = a.stride.value_or(Hw{1, 1});
  if (stride.h < 1 || stride.w < 1) ok = false, ctx.error(fmt::format("stride must be at least 1, got {}x{}", stride.h, stride.w));
  if (a.dilation.h < 1 || a.dilation.w < 1)
    ok = false, ctx.error(fmt::format("dilation must be at least 1, got {}x{}", a.dilation.h, a.dilation.w));
  if (a.groups < 1) ok = false, ctx.error(fmt::format("groups must be at least 1, got {}", a.groups));
  const Padding& p = a.pad;
  if (!p.same && (p.top < 0 || p.bottom < 0 || p.left < 0 || p.right < 0))
    ok = false, ctx.error(fmt::format("padding must not be negative, got {},{},{},{} (top, bottom, left, right)", p.top,
                                      p.bottom, p.left, p.right));
  if (p.same && stride != Hw{1, 1})
    ok = false, ctx.error(fmt::format("pad: same needs stride 1 (as in PyTorch), but stride is {}", hw(stride.h, stride.w)),
                          {}, "give the padding as a number, e.g. pad: 1 for a 3x3 kernel");
  if (a.in && *a.in != in.c)
    ok = false, ctx.error(fmt::format("declares in: {}, but its {} ({})", plural(*a.in, "channel"),
                                      fmt::format("input '{}' has {}", ctx.input().name, plural(in.c, "channel")), in.str()),
                          {}, fmt::format("set in: {}, or remove 'in' to infer it", in.c));
  if (a.groups >= 1 && in.c % a.groups != 0)
    ok = false, ctx.error(fmt::format("its input '{}' has {}, which groups: {} does not divide", ctx.input().name,
                                      plural(in.c, "channel"), a.groups),
                          {}, fmt::format("groups must divide both the input channels ({}) and out ({})", in.c, a.out));
  if (a.groups >= 1 && a.out >= 1 && a.out % a.groups != 0)
    ok = false, ctx.error(fmt::format("out: {} is not divisible by groups: {}", a.out, a.groups), {},
                          fmt::format("groups must divide both the input channels ({}) and out ({})", in.c, a.out));
  if (!ok) return std::nullopt;

  a.stride = stride;
  if (p.same) {
    // PyTorch's padding='same': total d*(k-1); the odd row/column goes bottom/right.
    std::int64_t th = a.dilation.h * (a.kernel.h - 1), tw = a.dilation.w * (a.kernel.w - 1);
    a.pad = Padding{th / 2, th - th / 2, tw / 2, tw - tw / 2, false};
  }
  std::int64_t ph = in.h + a.pad.top + a.pad.bottom, pw = in.w + a.pad.left + a.pad.right;
  std::int64_t kh = a.dilation.h * (a.kernel.h - 1) + 1, kw = a.dilation.w * (a.kernel.w - 1) + 1;
  std::int64_t oh = floor_div(ph - kh, stride.h) + 1, ow = floor_div(pw - kw, stride.w) + 1;
  if (kh > ph || kw > pw) {
    std::string what = (a.dilation == Hw{1, 1}) ? fmt::format("kernel {}x{}", kh, kw)
                                                 : fmt::format("dilated kernel {}x{} ({}x{}, dilation {})", kh, kw,
                                                               a.kernel.h, a.kernel.w, hw(a.dilation.h, a.dilation.w));
    // The largest kernel that fits, and the padding per side that would make this one fit.
    std::int64_t max_h = (ph - 1) / a.dilation.h + 1, max_w = (pw - 1) / a.dilation.w + 1;
    std::int64_t need_h = std::max<std::int64_t>(0, ceil_div(kh - in.h, 2));
    std::int64_t need_w = std::max<std::int64_t>(0, ceil_div(kw - in.w, 2));
    ctx.error(fmt::format("{} is larger than its padded input {}x{}", what, ph, pw),
              {fmt::format("{}; the output would be {}x{}", ctx.describe_input(), oh, ow)},
              fmt::format("use a kernel of at most {}, or pad by at least {}", hw(max_h, max_w), hw(need_h, need_w)),
              true);
    return std::nullopt;
  }
  return Shape::chw(a.out, oh, ow);
}

void params(const Layer& layer, std::span<const Layer> before, std::vector<Param>& out) {
  const Attrs& a = layer.attrs;
  std::int64_t in_c = before[static_cast<std::size_t>(layer.inputs[0])].shape.c;
  out.push_back({layer.name + ".weight", layer.index, ParamRole::weight, {a.out, in_c / a.groups, a.kernel.h, a.kernel.w}});
  if (a.bias) out.push_back({layer.name + ".bias", layer.index, ParamRole::bias, {a.out}});
}

std::optional<std::int64_t> flops(const Layer& layer, std::span<const Layer> before) {
  const Attrs& a = layer.attrs;
  std::int64_t in_c = before[static_cast<std::size_t>(layer.inputs[0])].shape.c;
  return checked_product({2, layer.shape.elements(), in_c / a.groups, a.kernel.h, a.kernel.w});
}

BackwardNeeds needs(const Layer& layer) { return {.input = !layer.attrs.frozen, .output = false}; }

}  // namespace

const OpDef& conv_op() {
  static const OpDef def{OpKind::conv, "conv", kKeys, 1, 1, true, infer, params, flops, needs};
  return def;
}

}  // namespace kiln::detail
