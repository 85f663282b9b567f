// conv: 2-D convolution (cross-correlation), PyTorch's Conv2d.
#include <fmt/format.h>

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu_layer.hpp"
#include "graph/op_def.hpp"
#include "layers/gemm.hpp"
#include "math/im2col.hpp"
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

// ---- CPU: im2col + GEMM over chunks of samples -----------------------------------------
//
// Per chunk of cn samples and per group, forward is Y[co, cn*P] = W[co, K] * col[K, cn*P]
// (P output pixels, K = in/groups * kh * kw); backward is dW^T += col * dY^T and
// dcol = W^T * dY, added back into dx by col2im. GEMM wants the chunk's samples side by side
// in its N dimension, so Y and dY pass through a channel-major [C][cn*P] buffer when cn > 1.
//
// Threads: one OpenMP team per chunk. Each thread builds its own block of columns, runs its
// own single-threaded GEMM on them and stores them, so forward needs no barrier and the
// columns stay in the cache of the core that wrote them; backward splits dW by rows and
// col2im by input planes after a barrier. This assumes OpenBLAS runs single-threaded (the
// executor's choice): with OpenBLAS threads of its own the team shrinks to one thread and
// each GEMM uses OpenBLAS's threads instead, as two busy pools on the same cores slow each
// other down. Every output element is written by one thread in a fixed order, with no
// atomics, and dW sums the chunks in order, so results repeat run to run.

// Floats of the column buffer a chunk aims at: ~2 MB, so that each core's share of it stays
// in its L2 cache between im2col and the GEMM that reads it.
constexpr std::int64_t kColumnFloats = std::int64_t{1} << 19;
// Column blocks start on multiples of this many floats (a cache line).
constexpr std::int64_t kAlign = 16;

math::ConvGeom geom_of(const Layer& layer, const Shape& in) {
  const Attrs& a = layer.attrs;
  Hw s = a.stride.value_or(Hw{1, 1});
  return {.c = in.c,   .h = in.h,         .w = in.w,          .oh = layer.shape.h, .ow = layer.shape.w,
          .kh = a.kernel.h, .kw = a.kernel.w, .sh = s.h,    .sw = s.w,          .ph = a.pad.top,
          .pw = a.pad.left, .dh = a.dilation.h, .dw = a.dilation.w};
}

// Samples per chunk for a batch of `batch`; depends on nothing else, so a given n is always
// cut the same way, and a smaller n never needs more workspace.
std::int64_t chunk_of(const math::ConvGeom& g, std::int64_t batch) {
  return std::clamp<std::int64_t>(kColumnFloats / (g.rows() * g.pixels()), 1, std::max<std::int64_t>(batch, 1));
}

// A call's workspace, for chunks of at most `chunk` samples: the column buffer (none when a
// pointwise conv of one sample reads its input directly), the channel-major buffer for Y or
// dY (none for chunks of one sample), and dW transposed (see cpu_backward).
struct Scratch {
  float* col = nullptr;
  float* yt = nullptr;
  float* dwt = nullptr;
};

std::int64_t col_floats(const math::ConvGeom& g, std::int64_t cn) { return g.pointwise() && cn == 1 ? 0 : g.rows() * cn * g.pixels(); }
std::int64_t yt_floats(const math::ConvGeom& g, std::int64_t cn, std::int64_t out) { return cn > 1 ? out * cn * g.pixels() : 0; }
std::int64_t dwt_floats(const math::ConvGeom& g, std::int64_t out, std::int64_t groups) { return g.rows() / groups * out; }

Scratch carve(const math::ConvGeom& g, std::int64_t chunk, std::int64_t out, float* base) {
  float* yt = base + col_floats(g, chunk);
  return {base, yt, yt + yt_floats(g, chunk, out)};
}

std::int64_t workspace(const Layer& layer, std::span<const Layer> before, std::int64_t batch) {
  const math::ConvGeom g = geom_of(layer, before[static_cast<std::size_t>(layer.inputs[0])].shape);
  const std::int64_t chunk = chunk_of(g, batch), out = layer.shape.c;
  return col_floats(g, chunk) + yt_floats(g, chunk, out) + dwt_floats(g, out, layer.attrs.groups);
}

// Thread t's share of [0, extent): contiguous, starting on a multiple of `align`.
math::Range share(std::int64_t extent, std::int64_t align, int t, int team) {
  const std::int64_t step = ((extent + align - 1) / align + team - 1) / team * align;
  return {std::min(extent, t * step), std::min(extent, (t + 1) * step)};
}

// Thread t's columns of a chunk: whole samples when there are at least as many as threads.
math::Range column_block(std::int64_t cn, std::int64_t pixels, int t, int team) {
  if (cn >= team) return {cn * t / team * pixels, cn * (t + 1) / team * pixels};
  return share(cn * pixels, kAlign, t, team);
}

// Calls f(s, p0, p1) for each sample s whose pixels [p0, p1) lie in the column block.
template <class F>
void for_samples(math::Range block, std::int64_t pixels, F&& f) {
  for (std::int64_t s = block.begin / pixels; s * pixels < block.end; ++s)
    f(s, std::max<std::int64_t>(block.begin - s * pixels, 0), std::min(block.end - s * pixels, pixels));
}

// Zeroes [a, b) with plain stores when short: GCC turns a zeroing loop into a memset call,
// which costs more than the one or two floats at a typical row edge.
inline void zero(float* p, std::int64_t a, std::int64_t b) {
  if (b - a > 8) {
    std::fill(p + a, p + b, 0.0f);
    return;
  }
  for (std::int64_t t = 0; t < 8; ++t)
    if (a + t < b) p[a + t] = 0.0f;
}

// With stride 1 and an output as wide as the input (every 'same' conv), tap (i, j) maps
// the input plane onto the output plane by one constant shift of the flat index: a row of
// the column matrix is one block copy, after which only the columns that wrapped around
// from the neighbouring row need zeroing. Cuts im2col and col2im to memory speed on small
// planes, where per-row copies of 8 or 16 floats cost more than the data.
bool shifted_rows(const math::ConvGeom& g) { return g.sh == 1 && g.sw == 1 && g.ow == g.w; }

// What tap (i, j) reads: the outputs with a source inside the input, and the first source.
struct Tap {
  std::int64_t i, j;
  math::Range ry, rx;
  std::int64_t y0, x0;
};

Tap tap_of(const math::ConvGeom& g, std::int64_t i, std::int64_t j) {
  const math::Range ry = math::conv_valid(g.h, g.oh, i, g.sh, g.ph, g.dh);
  const math::Range rx = math::conv_valid(g.w, g.ow, j, g.sw, g.pw, g.dw);
  return {i, j, ry, rx, math::conv_source(ry.begin, i, g.sh, g.ph, g.dh), math::conv_source(rx.begin, j, g.sw, g.pw, g.dw)};
}

// Pixels [p0, p1) of one row of the column matrix: tap t of input plane src.
void im2col_pixels(const math::ConvGeom& g, const Tap& t, const float* src, float* dst, std::int64_t p0, std::int64_t p1) {
  const std::int64_t ow = g.ow;
  if (t.ry.begin == t.ry.end || t.rx.begin == t.rx.end) return zero(dst, p0, p1);
  if (shifted_rows(g)) {
    const std::int64_t first = t.ry.begin * ow + t.rx.begin, last = (t.ry.end - 1) * ow + t.rx.end;
    const std::int64_t lo = std::clamp(first, p0, p1), hi = std::clamp(last, lo, p1);
    zero(dst, p0, lo);
    std::memcpy(dst + lo, src + t.y0 * g.w + t.x0 + (lo - first), static_cast<std::size_t>(hi - lo) * sizeof(float));
    zero(dst, hi, p1);
    for (std::int64_t oy = t.ry.begin; oy + 1 < t.ry.end; ++oy)
      zero(dst, std::max(p0, oy * ow + t.rx.end), std::min(p1, (oy + 1) * ow + t.rx.begin));
    return;
  }
  for (std::int64_t oy = p0 / ow; oy * ow < p1; ++oy) {
    float* d = dst + oy * ow;
    const std::int64_t a = std::max<std::int64_t>(p0 - oy * ow, 0), b = std::min(p1 - oy * ow, ow);
    if (oy < t.ry.begin || oy >= t.ry.end) {
      zero(d, a, b);
      continue;
    }
    const float* v = src + (t.y0 + (oy - t.ry.begin) * g.sh) * g.w + t.x0;
    const std::int64_t lo = std::clamp(t.rx.begin, a, b), hi = std::clamp(t.rx.end, lo, b);
    zero(d, a, lo);
    for (std::int64_t ox = lo; ox < hi; ++ox) d[ox] = v[(ox - t.rx.begin) * g.sw];
    zero(d, hi, b);
  }
}

// Columns `block` of col [K][cn*P] from cn samples of x (NCHW).
void im2col_block(const math::ConvGeom& g, const float* x, std::int64_t cn, float* col, math::Range block) {
  const std::int64_t pixels = g.pixels(), cols = cn * pixels;
  for (std::int64_t r = 0; r < g.rows(); ++r) {
    const Tap t = tap_of(g, (r / g.kw) % g.kh, r % g.kw);
    const float* plane = x + r / (g.kh * g.kw) * g.h * g.w;
    float* row = col + r * cols;
    for_samples(block, pixels, [&](std::int64_t s, std::int64_t p0, std::int64_t p1) {
      im2col_pixels(g, t, plane + s * g.c * g.h * g.w, row + s * pixels, p0, p1);
    });
  }
}

// The adjoint of im2col, dcol [K][cn*P] -> dx (cn samples, NCHW), shared among the team by
// input planes; each plane adds its taps in a fixed order. Clobbers dcol's wrapped columns.
void col2im(const math::ConvGeom& g, float* dcol, std::int64_t cn, float* dx, bool accumulate) {
  const std::int64_t pixels = g.pixels(), cols = cn * pixels, plane_size = g.h * g.w, ow = g.ow;
#pragma omp for collapse(2) schedule(static)
  for (std::int64_t s = 0; s < cn; ++s) {
    for (std::int64_t ci = 0; ci < g.c; ++ci) {
      float* plane = dx + (s * g.c + ci) * plane_size;
      if (!accumulate) std::fill(plane, plane + plane_size, 0.0f);
      for (std::int64_t i = 0; i < g.kh; ++i) {
        for (std::int64_t j = 0; j < g.kw; ++j) {
          const Tap t = tap_of(g, i, j);
          if (t.ry.begin == t.ry.end || t.rx.begin == t.rx.end) continue;
          float* v = dcol + math::col_row(g, ci, i, j) * cols + s * pixels;
          if (shifted_rows(g)) {
            for (std::int64_t oy = t.ry.begin; oy + 1 < t.ry.end; ++oy) zero(v, oy * ow + t.rx.end, (oy + 1) * ow + t.rx.begin);
            const std::int64_t first = t.ry.begin * ow + t.rx.begin, len = (t.ry.end - 1) * ow + t.rx.end - first;
            float* d = plane + t.y0 * g.w + t.x0;
            for (std::int64_t q = 0; q < len; ++q) d[q] += v[first + q];
            continue;
          }
          for (std::int64_t oy = t.ry.begin; oy < t.ry.end; ++oy) {
            float* d = plane + (t.y0 + (oy - t.ry.begin) * g.sh) * g.w + t.x0;
            const float* r = v + oy * ow + t.rx.begin;
            for (std::int64_t q = 0; q < t.rx.end - t.rx.begin; ++q) d[q * g.sw] += r[q];
          }
        }
      }
    }
  }
}

// Columns `block` of dY (cn samples, [cn][C][P]) into the channel-major [C][cn*P] buffer.
void gather_block(const float* dy, std::int64_t cn, std::int64_t c, std::int64_t pixels, float* dyt, math::Range block) {
  for (std::int64_t ch = 0; ch < c; ++ch)
    for_samples(block, pixels, [&](std::int64_t s, std::int64_t p0, std::int64_t p1) {
      std::memcpy(dyt + ch * cn * pixels + s * pixels + p0, dy + (s * c + ch) * pixels + p0,
                  static_cast<std::size_t>(p1 - p0) * sizeof(float));
    });
}

// Columns `block` of Y from the channel-major buffer yt into y (cn samples, NCHW), adding the
// bias (nullptr: none). For a chunk of one sample yt is y itself.
void store_block(const float* yt, float* y, std::int64_t cn, std::int64_t c, std::int64_t pixels, const float* bias,
                 math::Range block) {
  if (cn == 1 && !bias) return;
  for (std::int64_t ch = 0; ch < c; ++ch) {
    const float b = bias ? bias[ch] : 0.0f;
    for_samples(block, pixels, [&](std::int64_t s, std::int64_t p0, std::int64_t p1) {
      const float* a = yt + ch * cn * pixels + s * pixels;
      float* d = y + (s * c + ch) * pixels;
      for (std::int64_t p = p0; p < p1; ++p) d[p] = a[p] + b;
    });
  }
}

struct ConvDims {
  math::ConvGeom g;
  std::int64_t groups, pixels, co, co_g, k_g, in_size, out_size;

  explicit ConvDims(const CpuLayer& l)
      : g(geom_of(*l.layer, l.in_shape())), groups(l.layer->attrs.groups), pixels(g.pixels()), co(l.layer->shape.c),
        co_g(co / groups), k_g(g.rows() / groups), in_size(g.c * g.h * g.w), out_size(co * pixels) {}
};

void cpu_forward(const CpuLayer& l) {
  const ConvDims d(l);
  const std::int64_t chunk = chunk_of(d.g, l.n);
  const Scratch ws = carve(d.g, chunk, d.co, l.workspace);
  const float* w = l.params[0];
  const float* bias = l.layer->attrs.bias ? l.params[1] : nullptr;
  for (std::int64_t n0 = 0; n0 < l.n; n0 += chunk) {
    const std::int64_t cn = std::min(chunk, l.n - n0), cols = cn * d.pixels;
    const float* x = l.x[0] + n0 * d.in_size;
    float* y = l.y + n0 * d.out_size;
    const bool direct = col_floats(d.g, cn) == 0;
    const float* col = direct ? x : ws.col;
    float* yt = cn == 1 ? y : ws.yt;
#pragma omp parallel num_threads(gemm_team(l.threads))
    {
      const math::Range blk = column_block(cn, d.pixels, omp_get_thread_num(), omp_get_num_threads());
      if (!direct) im2col_block(d.g, x, cn, ws.col, blk);
      for (std::int64_t gi = 0; gi < d.groups; ++gi)
        gemm(Trans::no, Trans::no, d.co_g, blk.end - blk.begin, d.k_g, 1.0f, w + gi * d.co_g * d.k_g, d.k_g,
             col + gi * d.k_g * cols + blk.begin, cols, 0.0f, yt + gi * d.co_g * cols + blk.begin, cols);
      store_block(yt, y, cn, d.co, d.pixels, bias, blk);
    }
  }
}

// Sum of n floats in a fixed order, in 16 interleaved partial sums so that it vectorizes
// (a single running sum cannot: float addition does not reassociate).
double sum_floats(const float* v, std::int64_t n) {
  constexpr std::int64_t kLanes = 16;
  float part[kLanes] = {};
  std::int64_t t = 0;
  for (; t + kLanes <= n; t += kLanes)
    for (std::int64_t k = 0; k < kLanes; ++k) part[k] += v[t + k];
  double sum = 0.0;
  for (; t < n; ++t) sum += v[t];
  for (float p : part) sum += p;
  return sum;
}

// db[c] = sum over samples and pixels of dy, one thread per channel.
void bias_grad(const float* dy, std::int64_t n, std::int64_t c, std::int64_t p, float* db, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t ch = 0; ch < c; ++ch) {
    double sum = 0.0;
    for (std::int64_t s = 0; s < n; ++s) sum += sum_floats(dy + (s * c + ch) * p, p);
    db[ch] = static_cast<float>(sum);
  }
}

// dW is accumulated transposed, dW^T[K_g][co_g] += col * dY^T per group: OpenBLAS runs this
// orientation of the same product 1.2-1.6x faster on these thin shapes (M = out channels,
// N = K, long inner dimension), and its rows split evenly among threads. The final
// transpose touches only the weights.
void cpu_backward(const CpuLayer& l) {
  const ConvDims d(l);
  const std::int64_t chunk = chunk_of(d.g, l.n);
  const Scratch ws = carve(d.g, chunk, d.co, l.workspace);
  const float* w = l.params[0];
  float* dw = l.grads.empty() ? nullptr : l.grads[0];
  float* db = l.layer->attrs.bias && l.grads.size() > 1 ? l.grads[1] : nullptr;
  float* dx = l.dx.empty() ? nullptr : l.dx[0];
  const bool accumulate = !l.accumulate.empty() && l.accumulate[0];
  if (db) bias_grad(l.dy, l.n, d.co, d.pixels, db, l.threads);
  if (dw && l.n == 0) std::fill(ws.dwt, ws.dwt + d.k_g * d.co, 0.0f);
  for (std::int64_t n0 = 0; n0 < l.n && (dw || dx); n0 += chunk) {
    const std::int64_t cn = std::min(chunk, l.n - n0), cols = cn * d.pixels;
    const bool direct = col_floats(d.g, cn) == 0;
    const float* x = dw ? l.x[0] + n0 * d.in_size : nullptr;  // not kept when frozen
    const float* col = direct ? x : ws.col;
    const float* dyt = cn == 1 ? l.dy + n0 * d.out_size : ws.yt;
    float* dxc = dx ? dx + n0 * d.in_size : nullptr;
    // A pointwise chunk of one sample writes dx directly; otherwise dcol reuses the column buffer.
    float* dcol = direct ? dxc : ws.col;
    const float dcol_beta = direct && accumulate ? 1.0f : 0.0f;
#pragma omp parallel num_threads(gemm_team(l.threads))
    {
      const int t = omp_get_thread_num(), team = omp_get_num_threads();
      const math::Range blk = column_block(cn, d.pixels, t, team);
      if (cn > 1) gather_block(l.dy + n0 * d.out_size, cn, d.co, d.pixels, ws.yt, blk);
      if (dw && !direct) im2col_block(d.g, x, cn, ws.col, blk);
#pragma omp barrier
      if (dw) {
        const math::Range rows = share(d.k_g, kAlign, t, team);
        for (std::int64_t gi = 0; gi < d.groups; ++gi)
          gemm(Trans::no, Trans::yes, rows.end - rows.begin, d.co_g, cols, 1.0f, col + (gi * d.k_g + rows.begin) * cols, cols,
               dyt + gi * d.co_g * cols, cols, n0 == 0 ? 0.0f : 1.0f, ws.dwt + (gi * d.k_g + rows.begin) * d.co_g, d.co_g);
      }
      if (dx) {
#pragma omp barrier
        for (std::int64_t gi = 0; gi < d.groups; ++gi)
          gemm(Trans::yes, Trans::no, d.k_g, blk.end - blk.begin, d.co_g, 1.0f, w + gi * d.co_g * d.k_g, d.k_g,
               dyt + gi * d.co_g * cols + blk.begin, cols, dcol_beta, dcol + gi * d.k_g * cols + blk.begin, cols);
        if (!direct) {
#pragma omp barrier
          col2im(d.g, ws.col, cn, dxc, accumulate);
        }
      }
    }
  }
  if (dw) {
#pragma omp parallel for collapse(2) num_threads(l.threads) schedule(static)
    for (std::int64_t gi = 0; gi < d.groups; ++gi)
      for (std::int64_t c = 0; c < d.co_g; ++c)
        for (std::int64_t k = 0; k < d.k_g; ++k) dw[(gi * d.co_g + c) * d.k_g + k] = ws.dwt[(gi * d.k_g + k) * d.co_g + c];
  }
}

}  // namespace

const OpDef& conv_op() {
  static const OpDef def{OpKind::conv, "conv", kKeys,       1,           1,      true,    infer,
                         params,       flops,  needs,       cpu_forward, cpu_backward, nullptr, workspace};
  return def;
}

}  // namespace kiln::detail
