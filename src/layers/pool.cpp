// maxpool, avgpool: PyTorch's MaxPool2d / AvgPool2d (count_include_pad=True), ceil mode.
#include <fmt/format.h>

#include <algorithm>

#include "backend/cpu_layer.hpp"
#include "graph/op_def.hpp"
#include "math/pool.hpp"
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

// ---- CPU: one (sample, channel) plane per iteration --------------------------------------

struct Geometry {
  std::int64_t planes, in_h, in_w, out_h, out_w;
  Hw kernel, stride;
  std::int64_t pad_h, pad_w;

  math::PoolSpan row(std::int64_t o) const { return math::pool_span(o, kernel.h, stride.h, pad_h, in_h); }
  math::PoolSpan col(std::int64_t o) const { return math::pool_span(o, kernel.w, stride.w, pad_w, in_w); }
};

Geometry geometry(const CpuLayer& l) {
  const Shape& in = l.in_shape();
  const Shape& out = l.out_shape();
  const Attrs& a = l.layer->attrs;
  return {l.n * in.c, in.h, in.w, out.h, out.w, a.kernel, *a.stride, a.pad.top, a.pad.left};
}

template <bool Max>
void forward(const CpuLayer& l) {
  const Geometry g = geometry(l);
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t p = 0; p < g.planes; ++p) {
    const float* x = l.x[0] + p * g.in_h * g.in_w;
    float* y = l.y + p * g.out_h * g.out_w;
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      const math::PoolSpan rows = g.row(oh);
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const math::PoolSpan cols = g.col(ow);
        if constexpr (Max)
          y[oh * g.out_w + ow] = x[math::max_offset(x, g.in_w, rows, cols)];
        else
          y[oh * g.out_w + ow] = math::avg_window(x, g.in_w, rows, cols);
      }
    }
  }
}

// Max: the gradient goes to the window's first maximum, found again in x (not by comparing
// with y, which an in-place successor may have changed). Avg: dy / divisor to every input
// element the window reads.
template <bool Max>
void backward(const CpuLayer& l) {
  if (!l.dx[0]) return;
  const Geometry g = geometry(l);
  const bool accumulate = l.accumulate[0];
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t p = 0; p < g.planes; ++p) {
    const float* x = l.x[0] + p * g.in_h * g.in_w;
    const float* dy = l.dy + p * g.out_h * g.out_w;
    float* dx = l.dx[0] + p * g.in_h * g.in_w;
    if (!accumulate) std::fill(dx, dx + g.in_h * g.in_w, 0.0f);
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      const math::PoolSpan rows = g.row(oh);
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const math::PoolSpan cols = g.col(ow);
        const float d = dy[oh * g.out_w + ow];
        if constexpr (Max) {
          dx[math::max_offset(x, g.in_w, rows, cols)] += d;
        } else {
          const float share = d / static_cast<float>(rows.extent * cols.extent);
          for (std::int64_t r = rows.begin; r < rows.end; ++r)
            for (std::int64_t c = cols.begin; c < cols.end; ++c) dx[r * g.in_w + c] += share;
        }
      }
    }
  }
}

}  // namespace

const OpDef& maxpool_op() {
  static const OpDef def{OpKind::maxpool, "maxpool", kKeys, 1, 1, false, infer, nullptr, flops, max_needs,
                         forward<true>, backward<true>};
  return def;
}

const OpDef& avgpool_op() {
  static const OpDef def{OpKind::avgpool, "avgpool", kKeys, 1, 1, false, infer, nullptr, flops, avg_needs,
                         forward<false>, backward<false>};
  return def;
}

}  // namespace kiln::detail
