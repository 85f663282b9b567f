// maxpool, avgpool: PyTorch's MaxPool2d / AvgPool2d (count_include_pad=True), ceil mode.
#include <fmt/format.h>

#include "graph/op_def.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {
    {"kernel", KeyType::int_pair, true}, {"stride", KeyType::int_pair}, {"pad", KeyType::pool_pad}, {"ceil", KeyType::boolean},
};

std::string hw(std::int64_t h, std::int64_t w) { return h == w ? fmt::format("{}", h) : fmt::format("{}x{}", h, w); }

// PyTorch's pooling_output_shape: floor or ceil, and in ceil mode the last window must
// start inside the input or its left padding.
std::int64_t pooled(std::int64_t size, std::int64_t k, std::int64_t s, std::int64_t pad, bool ceil) {
  std::int64_t span = size + 2 * pad - k;
  std::int64_t out = (ceil ? ceil_div(span, s) : floor_div(span, s)) + 1;
  if (ceil && out > 0 && (out - 1) * s >= size + pad) --out;
  return out;
}

std::optional<Shape> infer(ShapeCtx& ctx) {
  Attrs& a = ctx.layer.attrs;
  if (!ctx.require_image()) return std::nullopt;
  const Shape& in = ctx.in();
  bool ok = true;
  if (a.kernel.h < 1 || a.kernel.w < 1)
    ok = false, ctx.error(fmt::format("kernel must be at least 1, got {}x{}", a.kernel.h, a.kernel.w));
  Hw stride = a.stride.value_or(a.kernel);
  if (stride.h < 1 || stride.w < 1) ok = false, ctx.error(fmt::format("stride must be at least 1, got {}x{}", stride.h, stride.w));
  const Padding& p = a.pad;
  if (p.same || !p.symmetric())
    ok = false, ctx.error("pooling padding must be the same on both sides (an integer or [h, w]), as in PyTorch");
  else if (p.top < 0 || p.left < 0)
    ok = false, ctx.error(fmt::format("padding must not be negative, got {}", hw(p.top, p.left)));
  if (a.dilation != Hw{1, 1} || a.groups != 1)
    ok = false, ctx.error(fmt::format("{} has no dilation or groups", op_def(ctx.layer.op).name));
  if (!ok) return std::nullopt;
  if (2 * p.top > a.kernel.h || 2 * p.left > a.kernel.w) {
    ctx.error(fmt::format("pad {} is more than half the kernel {}", hw(p.top, p.left), hw(a.kernel.h, a.kernel.w)), {},
              fmt::format("padding of a pooling window must be at most kernel/2 (as in PyTorch): at most {}",
                          hw(a.kernel.h / 2, a.kernel.w / 2)),
              true);
    return std::nullopt;
  }
  a.stride = stride;
  std::int64_t ph = in.h + 2 * p.top, pw = in.w + 2 * p.left;
  std::int64_t oh = pooled(in.h, a.kernel.h, stride.h, p.top, a.ceil);
  std::int64_t ow = pooled(in.w, a.kernel.w, stride.w, p.left, a.ceil);
  if (a.kernel.h > ph || a.kernel.w > pw) {
    ctx.error(fmt::format("pooling window {}x{} is larger than its padded input {}x{}", a.kernel.h, a.kernel.w, ph, pw),
              {fmt::format("{}; the output would be {}x{}", ctx.describe_input(), std::max<std::int64_t>(oh, 0),
                           std::max<std::int64_t>(ow, 0))},
              fmt::format("use a window of at most {}, or remove this pooling (the feature map is already {}x{})",
                          hw(ph, pw), in.h, in.w),
              true);
    return std::nullopt;
  }
  if (oh < 1 || ow < 1) {
    ctx.error(fmt::format("output would be {}x{}", oh, ow), {ctx.describe_input()}, "use a smaller kernel or stride", true);
    return std::nullopt;
  }
  return Shape::chw(in.c, oh, ow);
}

std::optional<std::int64_t> flops(const Layer& layer, std::span<const Layer>) {
  return checked_product({layer.shape.elements(), layer.attrs.kernel.h, layer.attrs.kernel.w});
}

BackwardNeeds max_needs(const Layer&) { return {.input = true, .output = true}; }
BackwardNeeds avg_needs(const Layer&) { return {}; }

}  // namespace

const OpDef& maxpool_op() {
  static const OpDef def{OpKind::maxpool, "maxpool", kKeys, 1, 1, false, infer, nullptr, flops, max_needs};
  return def;
}

const OpDef& avgpool_op() {
  static const OpDef def{OpKind::avgpool, "avgpool", kKeys, 1, 1, false, infer, nullptr, flops, avg_needs};
  return def;
}

}  // namespace kiln::detail
