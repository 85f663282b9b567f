// maxpool, avgpool: PyTorch's MaxPool2d / AvgPool2d (count_include_pad=True), ceil mode.
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstdint>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "math/pool.hpp"
#include "math/pool_strided.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {
    {.name = "kernel", .type = KeyType::int_pair, .field = &Attrs::kernel, .required = true},
    {.name = "stride", .type = KeyType::int_pair, .field = &Attrs::stride},
    {.name = "pad", .type = KeyType::pool_pad, .field = &Attrs::pad},
    {.name = "ceil", .type = KeyType::boolean, .field = &Attrs::ceil},
};
static_assert(key_fields_fit(kKeys));

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

// NHWC: plane p (= sample * C + channel) starts at (p / C) * H * W * C + p % C, its rows W * C
// and its columns C floats apart. Each output scans its window with math/pool_strided.hpp,
// in the NCHW kernels' order, so both layouts give the same numbers; backward adds into dx
// in the same (row, column) order too.
struct Strided {
  std::int64_t c, in_plane, out_plane;
  std::int64_t in_base(std::int64_t p) const { return p / c * in_plane * c + p % c; }
  std::int64_t out_base(std::int64_t p) const { return p / c * out_plane * c + p % c; }
};

Strided strided(const CpuLayer& l, const Geometry& g) {
  return {l.in_shape().c, g.in_h * g.in_w, g.out_h * g.out_w};
}

template <bool Max>
void forward_nhwc(const CpuLayer& l) {
  const Geometry g = geometry(l);
  const Strided s = strided(l, g);
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t p = 0; p < g.planes; ++p) {
    const float* x = l.x[0] + s.in_base(p);
    float* y = l.y + s.out_base(p);
    for (std::int64_t oh = 0; oh < g.out_h; ++oh)
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const math::PoolSpan rows = g.row(oh), cols = g.col(ow);
        y[(oh * g.out_w + ow) * s.c] = Max ? x[math::max_offset_strided(x, g.in_w * s.c, s.c, rows, cols)]
                                           : math::avg_window_strided(x, g.in_w * s.c, s.c, rows, cols);
      }
  }
}

template <bool Max>
void backward_nhwc(const CpuLayer& l) {
  const Geometry g = geometry(l);
  const Strided s = strided(l, g);
  const bool accumulate = l.accumulate[0];
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t p = 0; p < g.planes; ++p) {
    const float* x = l.x[0] + s.in_base(p);
    const float* dy = l.dy + s.out_base(p);
    float* dx = l.dx[0] + s.in_base(p);
    if (!accumulate)
      for (std::int64_t i = 0; i < s.in_plane; ++i) dx[i * s.c] = 0.0f;
    for (std::int64_t oh = 0; oh < g.out_h; ++oh)
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const math::PoolSpan rows = g.row(oh), cols = g.col(ow);
        const float d = dy[(oh * g.out_w + ow) * s.c];
        if constexpr (Max) {
          dx[math::max_offset_strided(x, g.in_w * s.c, s.c, rows, cols)] += d;
        } else {
          const float share = d / static_cast<float>(rows.extent * cols.extent);
          for (std::int64_t r = rows.begin; r < rows.end; ++r)
            for (std::int64_t c = cols.begin; c < cols.end; ++c) dx[(r * g.in_w + c) * s.c] += share;
        }
      }
  }
}

// Max forward accumulates whole output rows, one window offset (r, kw) at a time: the
// inner loop then runs over independent outputs with a fixed stride, which vectorizes,
// instead of a compare chain per output (this was the CPU step's slowest layer).
void max_forward(const CpuLayer& l) {
  if (l.nhwc()) return forward_nhwc<true>(l);
  const Geometry g = geometry(l);
  const std::int64_t s = g.stride.w, k = g.kernel.w;
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t p = 0; p < g.planes; ++p) {
    const float* x = l.x[0] + p * g.in_h * g.in_w;
    float* y = l.y + p * g.out_h * g.out_w;
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      const math::PoolSpan rows = g.row(oh);
      float* out = y + oh * g.out_w;
      std::fill(out, out + g.out_w, -INFINITY);
      for (std::int64_t r = rows.begin; r < rows.end; ++r) {
        for (std::int64_t kw = 0; kw < k; ++kw) {
          // Outputs whose window column kw lies inside the input: 0 <= ow*s + kw - pad < in_w.
          const std::int64_t shift = kw - g.pad_w;
          const std::int64_t lo = std::max<std::int64_t>(0, detail::ceil_div(-shift, s));
          const std::int64_t hi = std::min(g.out_w, detail::floor_div(g.in_w - 1 - shift, s) + 1);
          const float* in = x + r * g.in_w + shift;
          for (std::int64_t ow = lo; ow < hi; ++ow) {
            const float v = in[ow * s];
            const float best = out[ow];
            out[ow] = ((v > best) | (v != v)) ? v : best;  // NaN propagates, as PyTorch's
          }
        }
      }
    }
  }
}

void avg_forward(const CpuLayer& l) {
  if (l.nhwc()) return forward_nhwc<false>(l);
  const Geometry g = geometry(l);
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t p = 0; p < g.planes; ++p) {
    const float* x = l.x[0] + p * g.in_h * g.in_w;
    float* y = l.y + p * g.out_h * g.out_w;
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      const math::PoolSpan rows = g.row(oh);
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) y[oh * g.out_w + ow] = math::avg_window(x, g.in_w, rows, g.col(ow));
    }
  }
}

// Max backward, row by row like the forward: the argmax of every output of a row is found
// with selects over the window offsets in scan order (strict > keeps the first maximum; a
// NaN replaces, as PyTorch's `val > maxval || isnan(val)`), then the gradients scattered.
// Rows wider than the stack buffers take the per-output path.
constexpr std::int64_t kMaxRow = 1024;

void max_backward_row(const float* x, const float* dy, float* dx, const Geometry& g, std::int64_t oh) {
  const math::PoolSpan rows = g.row(oh);
  const float* dyr = dy + oh * g.out_w;
  if (g.out_w > kMaxRow) {
    for (std::int64_t ow = 0; ow < g.out_w; ++ow) dx[math::max_offset(x, g.in_w, rows, g.col(ow))] += dyr[ow];
    return;
  }
  float best[kMaxRow];
  std::int64_t index[kMaxRow];
  for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
    best[ow] = -INFINITY;
    index[ow] = rows.begin * g.in_w + g.col(ow).begin;
  }
  const std::int64_t s = g.stride.w;
  for (std::int64_t r = rows.begin; r < rows.end; ++r)
    for (std::int64_t kw = 0; kw < g.kernel.w; ++kw) {
      const std::int64_t shift = kw - g.pad_w;
      const std::int64_t lo = std::max<std::int64_t>(0, detail::ceil_div(-shift, s));
      const std::int64_t hi = std::min(g.out_w, detail::floor_div(g.in_w - 1 - shift, s) + 1);
      const float* in = x + r * g.in_w + shift;
      const std::int64_t base = r * g.in_w + shift;
      for (std::int64_t ow = lo; ow < hi; ++ow) {
        const float v = in[ow * s];
        // Masks, not a conditional: GCC turns `take ? a : b` on arrays into branches, which
        // mispredict on this data.
        const std::uint32_t m32 = 0u - static_cast<std::uint32_t>((v > best[ow]) | (v != v));
        const std::uint64_t m64 = 0u - static_cast<std::uint64_t>(m32 & 1u);
        best[ow] = std::bit_cast<float>((std::bit_cast<std::uint32_t>(v) & m32) | (std::bit_cast<std::uint32_t>(best[ow]) & ~m32));
        index[ow] = static_cast<std::int64_t>((static_cast<std::uint64_t>(base + ow * s) & m64) |
                                              (static_cast<std::uint64_t>(index[ow]) & ~m64));
      }
    }
  for (std::int64_t ow = 0; ow < g.out_w; ++ow) dx[index[ow]] += dyr[ow];
}

// Avg: dy / divisor to every input element the window reads.
template <bool Max>
void backward(const CpuLayer& l) {
  if (!l.dx[0]) return;
  if (l.nhwc()) return backward_nhwc<Max>(l);
  const Geometry g = geometry(l);
  const bool accumulate = l.accumulate[0];
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t p = 0; p < g.planes; ++p) {
    const float* x = l.x[0] + p * g.in_h * g.in_w;
    const float* dy = l.dy + p * g.out_h * g.out_w;
    float* dx = l.dx[0] + p * g.in_h * g.in_w;
    if (!accumulate) std::fill(dx, dx + g.in_h * g.in_w, 0.0f);
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      if constexpr (Max) {
        max_backward_row(x, dy, dx, g, oh);
      } else {
        const math::PoolSpan rows = g.row(oh);
        for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
          const math::PoolSpan cols = g.col(ow);
          const float share = dy[oh * g.out_w + ow] / static_cast<float>(rows.extent * cols.extent);
          for (std::int64_t r = rows.begin; r < rows.end; ++r)
            for (std::int64_t c = cols.begin; c < cols.end; ++c) dx[r * g.in_w + c] += share;
        }
      }
    }
  }
}

}  // namespace

const OpDef& maxpool_op() {
  static const OpDef def{
      .kind = OpKind::maxpool,
      .name = "maxpool",
      .keys = kKeys,
      .infer = infer,
      .flops = flops,
      .backward_needs = max_needs,
  };
  return def;
}

const CpuOp& maxpool_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::maxpool,
      .supports = cpu_runs_every_dtype,
      .forward = max_forward,
      .backward = backward<true>,
  };
  return entry;
}

const OpDef& avgpool_op() {
  static const OpDef def{
      .kind = OpKind::avgpool,
      .name = "avgpool",
      .keys = kKeys,
      .infer = infer,
      .flops = flops,
      .backward_needs = avg_needs,
  };
  return def;
}

const CpuOp& avgpool_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::avgpool,
      .supports = cpu_runs_every_dtype,
      .forward = avg_forward,
      .backward = backward<false>,
  };
  return entry;
}

}  // namespace kiln::detail
