// conv: 2-D convolution (cross-correlation), PyTorch's Conv2d.
#include <fmt/format.h>

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "layers/conv_onednn.hpp"
#include "layers/conv_winograd.hpp"
#include "layers/gemm.hpp"
#include "math/im2col.hpp"
#include "math/reduce.hpp"
#include "math/simd.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {
    {.name = "out", .type = KeyType::integer, .field = &Attrs::out, .required = true},
    {.name = "kernel", .type = KeyType::int_pair, .field = &Attrs::kernel, .required = true},
    {.name = "stride", .type = KeyType::int_pair, .field = &Attrs::stride},
    {.name = "pad", .type = KeyType::padding, .field = &Attrs::pad},
    {.name = "dilation", .type = KeyType::int_pair, .field = &Attrs::dilation},
    {.name = "groups", .type = KeyType::integer, .field = &Attrs::groups},
    {.name = "bias", .type = KeyType::boolean, .field = &Attrs::bias},
    {.name = "in", .type = KeyType::integer, .field = &Attrs::in},
    {.name = "init", .type = KeyType::choice, .field = &Attrs::init},
};
static_assert(key_fields_fit(kKeys));

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
  const std::int64_t patch = in.c * a.kernel.h * a.kernel.w;
  if (a.init == Attrs::Init::whiten && (a.groups != 1 || a.out != 2 * patch))
    ok = false, ctx.error(fmt::format("init: whiten needs out = 2 x in x kh x kw = {} (each eigenvector of the {}-value patch "
                                      "covariance and its negative) and groups 1, got out: {}, groups: {}",
                                      2 * patch, patch, a.out, a.groups),
                          {}, fmt::format("set out: {}", 2 * patch));
  if (a.init == Attrs::Init::whiten && ctx.input().op != OpKind::input)
    ok = false, ctx.error(fmt::format("init: whiten computes its filters from the images, but its input is '{}', not the model input",
                                      ctx.input().name),
                          {}, "use init: whiten on the first layer");
  if (a.init == Attrs::Init::dirac && a.groups != 1)
    ok = false, ctx.error("init: dirac needs groups 1", {}, "remove init: dirac or groups");
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
  // A whitening filter bank is computed from the data, then fixed.
  out.push_back({layer.name + ".weight", layer.index, ParamRole::weight, {a.out, in_c / a.groups, a.kernel.h, a.kernel.w}, 0,
                 a.init != Attrs::Init::whiten});
  if (a.bias) out.push_back({layer.name + ".bias", layer.index, ParamRole::bias, {a.out}});
}

std::optional<std::int64_t> flops(const Layer& layer, std::span<const Layer> before) {
  const Attrs& a = layer.attrs;
  std::int64_t in_c = before[static_cast<std::size_t>(layer.inputs[0])].shape.c;
  return checked_product({2, layer.shape.elements(), in_c / a.groups, a.kernel.h, a.kernel.w});
}

BackwardNeeds needs(const Layer& layer) { return {.input = !layer.attrs.frozen, .output = false}; }

// ---- CPU: im2col + GEMM ---------------------------------------------------------------
//
// Per sample and group, forward is Y[co, P] = W[co, K] * col[K, P] (P output pixels,
// K = in/groups * kh * kw); backward is dW^T += col * dY^T and dcol = W^T * dY, added back
// into dx by col2im. Y and dY are NCHW, so each sample's GEMMs read and write them in place.
//
// Threads: one OpenMP team per call. Each thread takes a contiguous share of the samples and
// a slot of the workspace of its own (a column matrix, one sample's dY^T, a partial dW), so
// there is no barrier, and a sample's columns are still in its core's cache when its GEMMs
// read them; the partial dWs are summed in thread order at the end. The GEMMs run
// single-threaded inside the team (kiln's own kernel, or OpenBLAS where it has no threads
// of its own; where it has, the team shrinks to one thread and OpenBLAS's threads run each
// GEMM, see gemm.hpp). Every output element is written by one thread in a fixed order, with
// no atomics, so results repeat run to run for a given number of threads.

// Slots in the workspace: the most threads a team can have.
constexpr std::int64_t kMaxTeam = 16;

math::ConvGeom geom_of(const Layer& layer, const Shape& in) {
  const Attrs& a = layer.attrs;
  Hw s = a.stride.value_or(Hw{1, 1});
  return {.c = in.c, .h = in.h, .w = in.w, .oh = layer.shape.h, .ow = layer.shape.w, .kh = a.kernel.h, .kw = a.kernel.w,
          .sh = s.h, .sw = s.w, .ph = a.pad.top, .pw = a.pad.left, .dh = a.dilation.h, .dw = a.dilation.w};
}

// A thread's slot: a column matrix (none for a pointwise conv, which reads its input as it
// is), one sample's dY transposed, and the thread's partial dW^T (see cpu_backward); in an
// NHWC plan also one sample's input and output in CHW order (see "NHWC" below).
struct Slot {
  std::int64_t col, dyt, dwt, xt = 0, yt = 0;
  std::int64_t floats() const { return col + dyt + dwt + xt + yt; }
};

Slot slot_of(const math::ConvGeom& g, std::int64_t out, std::int64_t groups, bool nhwc) {
  Slot slot{g.pointwise() ? 0 : g.rows() * g.pixels(), g.pixels() * out, g.rows() / groups * out};
  if (nhwc) slot.xt = g.c * g.h * g.w, slot.yt = out * g.pixels();
  return slot;
}

// ---- CPU: kiln's kernels or oneDNN's ------------------------------------------------
//
// oneDNN (conv_onednn.cpp) against im2col + kiln's GEMM, per layer and pass, measured on
// ResNet-18, MobileNetV2, cifar_quick and the airbench net (2 AVX2 cores, 2 threads, batch
// 32 or 128; data/results/cpu.md has the table): oneDNN's JIT kernels win on 3x3 convs with
// 16 or more input channels (by 10-45% forward, 5-45% backward, most on the airbench net's
// wide layers and on ResNet-18's 4x4 planes backward) and on depthwise convs (2-9x on
// MobileNetV2's small planes); kiln's GEMM wins on 1x1 convs (oneDNN's reorders into its
// blocked layout cost more than the product), on first layers with 3 input channels, and
// forward on planes of 16 pixels or fewer. In NHWC plans oneDNN runs every conv (kiln's
// kernels transpose each sample there; MobileNetV2 trains 1.25x faster with oneDNN's 1x1
// convs too, cifar_quick alike). CpuConv::automatic follows that rule: a fixed
// function of the shape, so every run of a plan picks the same kernels and computes the
// same numbers (a timing at compile time would not).

onednn::ConvShape onednn_shape(const Layer& layer, const Shape& in, std::int64_t n, Layout layout) {
  const Attrs& a = layer.attrs;
  const Hw s = a.stride.value_or(Hw{1, 1});
  return {.n = n, .c = in.c, .h = in.h, .w = in.w, .co = layer.shape.c, .oh = layer.shape.h, .ow = layer.shape.w,
          .kh = a.kernel.h, .kw = a.kernel.w, .sh = s.h, .sw = s.w, .dh = a.dilation.h, .dw = a.dilation.w,
          .pad_top = a.pad.top, .pad_bottom = a.pad.bottom, .pad_left = a.pad.left, .pad_right = a.pad.right,
          .groups = a.groups, .bias = a.bias, .nhwc = layout == Layout::nhwc};
}

// Which kernel runs each pass of a layer: the forward, the input gradient and the weight
// gradient.
enum class Kernel : std::uint8_t { kiln, winograd, onednn };

struct Choice {
  Kernel forward = Kernel::kiln, dx = Kernel::kiln, dw = Kernel::kiln;
  bool uses(Kernel k) const { return forward == k || dx == k || dw == k; }
};

Choice choose(const onednn::ConvShape& s, CpuConv want, int threads) {
  if (want == CpuConv::kiln) return {};
  // Asked only where the rule wants oneDNN: it makes the layer's primitives.
  const auto dnnl = [&] { return onednn::available() && onednn::supports(s, threads); };
  constexpr Choice all_onednn{Kernel::onednn, Kernel::onednn, Kernel::onednn};
  if (want == CpuConv::onednn) return dnnl() ? all_onednn : Choice{};
  if (winograd::applies(s) && s.c >= 16 && s.co >= 16 && s.oh * s.ow > 16)
    return {Kernel::winograd, Kernel::winograd, Kernel::winograd};
  if (!onednn::available()) return {};
  Choice c;
  if (s.nhwc) {
    c = all_onednn;  // kiln's NHWC kernels transpose each sample (the oracle's path, not a fast one)
  } else if (s.groups == s.c && s.co == s.groups && s.groups > 1) {
    c = all_onednn;  // depthwise
  } else if (s.kh * s.kw > 1 && s.groups == 1 && s.c >= 16) {
    c = {s.oh * s.ow > 16 ? Kernel::onednn : Kernel::kiln, Kernel::onednn, Kernel::onednn};
  }
  if (c.uses(Kernel::onednn) && !dnnl()) return {};
  return c;
}

std::int64_t workspace(const Layer& layer, std::span<const Layer> before, std::int64_t batch, Layout layout) {
  const Shape& in = before[static_cast<std::size_t>(layer.inputs[0])].shape;
  const math::ConvGeom g = geom_of(layer, in);
  const std::int64_t own = std::clamp<std::int64_t>(batch, 1, kMaxTeam) *
                           slot_of(g, layer.shape.c, layer.attrs.groups, layout == Layout::nhwc).floats();
  // oneDNN's buffers where the default rule gives the layer to oneDNN, for the batch at the
  // default thread count. Another count, or --cpu-conv onednn on a layer the rule keeps for
  // kiln, finds too little here and runs on memory of the thread's own, made once (see
  // conv_onednn.cpp); sizing for it here would make every conv's primitives at plan time.
  const onednn::ConvShape shape = onednn_shape(layer, in, batch, layout);
  const int threads = omp_get_max_threads();
  const Choice c = choose(shape, CpuConv::automatic, threads);
  std::int64_t floats = own;
  if (c.uses(Kernel::onednn)) floats = std::max(floats, onednn::workspace_floats(shape, threads));
  if (c.uses(Kernel::winograd)) floats = std::max(floats, winograd::workspace_floats(shape, threads));
  return floats;
}

// The team for n samples: no more threads than samples or slots.
int team_for(const CpuLayer& l) {
  return static_cast<int>(std::clamp<std::int64_t>(l.n, 1, std::min<std::int64_t>(gemm_team(l.threads), kMaxTeam)));
}

// Thread t's samples.
math::Range my_samples(std::int64_t n, int t, int team) { return {n * t / team, n * (t + 1) / team}; }

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

// Zeroes n floats at each of `count` places `stride` apart (the padding columns of a plane).
template <int N>
void zero_strided(float* p, std::int64_t count, std::int64_t stride) {
  for (std::int64_t k = 0; k < count; ++k, p += stride)
    for (int t = 0; t < N; ++t) p[t] = 0.0f;
}

void zero_strided(float* p, std::int64_t count, std::int64_t stride, std::int64_t n) {
  switch (n) {
    case 0: return;
    case 1: return zero_strided<1>(p, count, stride);
    case 2: return zero_strided<2>(p, count, stride);
    case 3: return zero_strided<3>(p, count, stride);
    case 4: return zero_strided<4>(p, count, stride);
    default:
      for (std::int64_t k = 0; k < count; ++k) std::fill(p + k * stride, p + k * stride + n, 0.0f);
  }
}

// With stride 1 and an output as wide as the input (every 'same' conv), tap (i, j) maps
// the input plane onto the output plane by one constant shift of the flat index: a row of
// the column matrix is one block copy, after which only the columns that wrapped around
// from the neighbouring row need zeroing. Cuts im2col and col2im to memory speed on small
// planes, where per-row copies of 8 or 16 floats cost more than the data.
bool shifted_rows(const math::ConvGeom& g) { return g.sh == 1 && g.sw == 1 && g.ow == g.w; }

// What tap (i, j) reads: the outputs with a source inside the input, and the first source.
struct Tap {
  math::Range ry, rx;
  std::int64_t y0, x0;
};

Tap tap_of(const math::ConvGeom& g, std::int64_t i, std::int64_t j) {
  const math::Range ry = math::conv_valid(g.h, g.oh, i, g.sh, g.ph, g.dh);
  const math::Range rx = math::conv_valid(g.w, g.ow, j, g.sw, g.pw, g.dw);
  return {ry, rx, math::conv_source(ry.begin, i, g.sh, g.ph, g.dh), math::conv_source(rx.begin, j, g.sw, g.pw, g.dw)};
}

// One row of a column matrix: what tap t reads from input plane src.
void im2col_row(const math::ConvGeom& g, const Tap& t, const float* src, float* dst) {
  const std::int64_t ow = g.ow, pixels = g.pixels();
  if (t.ry.begin == t.ry.end || t.rx.begin == t.rx.end) return zero(dst, 0, pixels);
  if (shifted_rows(g)) {
    const std::int64_t first = t.ry.begin * ow + t.rx.begin, last = (t.ry.end - 1) * ow + t.rx.end;
    zero(dst, 0, first);
    std::memcpy(dst + first, src + t.y0 * g.w + t.x0, static_cast<std::size_t>(last - first) * sizeof(float));
    zero(dst, last, pixels);
    zero_strided(dst + t.ry.begin * ow + t.rx.end, t.ry.end - t.ry.begin - 1, ow, ow - (t.rx.end - t.rx.begin));
    return;
  }
  zero(dst, 0, t.ry.begin * ow);
  for (std::int64_t oy = t.ry.begin; oy < t.ry.end; ++oy) {
    float* d = dst + oy * ow;
    const float* v = src + (t.y0 + (oy - t.ry.begin) * g.sh) * g.w + t.x0;
    zero(d, 0, t.rx.begin);
    for (std::int64_t ox = t.rx.begin; ox < t.rx.end; ++ox) d[ox] = v[(ox - t.rx.begin) * g.sw];
    zero(d, t.rx.end, ow);
  }
  zero(dst, t.ry.end * ow, pixels);
}

// The column matrix [K][P] of one sample x (CHW).
void im2col(const math::ConvGeom& g, const float* x, float* col) {
  const std::int64_t taps = g.kh * g.kw, pixels = g.pixels();
  for (std::int64_t ci = 0; ci < g.c; ++ci)
    for (std::int64_t tap = 0; tap < taps; ++tap)
      im2col_row(g, tap_of(g, tap / g.kw, tap % g.kw), x + ci * g.h * g.w, col + (ci * taps + tap) * pixels);
}

// The adjoint of im2col: one sample's column matrix dcol added into dx (CHW), each input
// plane adding its taps in a fixed order. Clobbers dcol's wrapped columns (see shifted_rows).
void col2im(const math::ConvGeom& g, float* dcol, float* dx, bool accumulate) {
  const std::int64_t pixels = g.pixels(), plane_size = g.h * g.w, ow = g.ow, taps = g.kh * g.kw;
  if (!accumulate) std::fill(dx, dx + g.c * plane_size, 0.0f);
  for (std::int64_t ci = 0; ci < g.c; ++ci) {
    float* plane = dx + ci * plane_size;
    for (std::int64_t tap = 0; tap < taps; ++tap) {
      const Tap t = tap_of(g, tap / g.kw, tap % g.kw);
      if (t.ry.begin == t.ry.end || t.rx.begin == t.rx.end) continue;
      float* v = dcol + (ci * taps + tap) * pixels;
      if (shifted_rows(g)) {
        zero_strided(v + t.ry.begin * ow + t.rx.end, t.ry.end - t.ry.begin - 1, ow, ow - (t.rx.end - t.rx.begin));
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

struct ConvDims {
  math::ConvGeom g;
  std::int64_t groups, pixels, co, co_g, k_g, in_size, out_size;
  bool nhwc;
  Slot slot;

  explicit ConvDims(const CpuLayer& l)
      : g(geom_of(*l.layer, l.in_shape())),
        groups(l.layer->attrs.groups),
        pixels(g.pixels()),
        co(l.layer->shape.c),
        co_g(co / groups),
        k_g(g.rows() / groups),
        in_size(g.c * g.h * g.w),
        out_size(co * pixels),
        nhwc(l.nhwc()),
        slot(slot_of(g, co, groups, nhwc)) {}
};

// NHWC: a sample is [P][C] (pixel-major), the transpose of the [C][P] the GEMMs above work
// on. Forward transposes the sample into the slot's xt, runs the NCHW path into yt and
// transposes that into y. Backward reads dY^T as the sample itself (the NCHW path copies it
// into dyt), transposes dY into yt for dcol = W^T * dY, and gathers dx in xt before adding it
// in. Every GEMM sees the same operands as in NCHW, so the results are the same; only an
// accumulated dx rounds differently (the taps are summed before the add, not into dx).

// dst[c][p] = src[p][c] for a rows x cols src.
void transpose(const float* src, std::int64_t rows, std::int64_t cols, float* dst) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

// dst[p][c] (+)= src[c][p] for a rows x cols src.
void transpose_into(const float* src, std::int64_t rows, std::int64_t cols, float* dst, bool accumulate) {
  for (std::int64_t c = 0; c < cols; ++c)
    for (std::int64_t r = 0; r < rows; ++r) {
      float& d = dst[c * rows + r];
      d = accumulate ? d + src[r * cols + c] : src[r * cols + c];
    }
}

// ---- CPU: depthwise convs, directly --------------------------------------------------
//
// A depthwise conv (groups = input channels = output channels, MobileNet's 3x3) has one
// kh x kw filter per channel: through im2col + GEMM it is one 1 x (kh*kw) x P product per
// channel and sample, all overhead. Directly, each tap adds a weighted, shifted copy of the
// input plane into the output plane (the same Tap ranges as im2col), row by row, which
// vectorizes along the row; the plane stays in L1 across the taps. Forward and dx split the
// (sample, channel) planes among threads, dW the channels, each summing its samples and
// pixels in a fixed order: the results do not depend on the thread count. NHWC plans keep
// the general path.

bool depthwise(const ConvDims& d) { return !d.nhwc && d.groups == d.g.c && d.co == d.groups; }

// out[oy][ox] += wv * in[tap's source of (oy, ox)] over the tap's valid outputs: forward
// (in = x, out = y). `scatter` runs it backwards: in[source] += wv * out[oy][ox] (dx).
template <bool scatter>
KILN_INLINE inline void depthwise_tap(const math::ConvGeom& g, const Tap& t, float wv, const float* x, float* y, float* dx, const float* dy) {
  for (std::int64_t oy = t.ry.begin; oy < t.ry.end; ++oy) {
    const std::int64_t src = (t.y0 + (oy - t.ry.begin) * g.sh) * g.w + t.x0;
    const std::int64_t len = t.rx.end - t.rx.begin;
    if constexpr (scatter) {
      float* d = dx + src;
      const float* r = dy + oy * g.ow + t.rx.begin;
      if (g.sw == 1)
        for (std::int64_t q = 0; q < len; ++q) d[q] += wv * r[q];
      else
        for (std::int64_t q = 0; q < len; ++q) d[q * g.sw] += wv * r[q];
    } else {
      const float* v = x + src;
      float* d = y + oy * g.ow + t.rx.begin;
      if (g.sw == 1)
        for (std::int64_t q = 0; q < len; ++q) d[q] += wv * v[q];
      else
        for (std::int64_t q = 0; q < len; ++q) d[q] += wv * v[q * g.sw];
    }
  }
}

void depthwise_forward(const CpuLayer& l, const ConvDims& d) {
  const math::ConvGeom& g = d.g;
  const std::int64_t plane = g.h * g.w, p = d.pixels, taps = g.kh * g.kw, c = d.co;
  const float* w = l.params[0];
  const float* bias = l.layer->attrs.bias ? l.params[1] : nullptr;
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t sc = 0; sc < l.n * c; ++sc) {
    const std::int64_t ch = sc % c;
    const float* x = l.x[0] + sc * plane;
    float* y = l.y + sc * p;
    math::with_best_simd([&](auto) KILN_INLINE {
      std::fill(y, y + p, 0.0f);
      for (std::int64_t tap = 0; tap < taps; ++tap)
        depthwise_tap<false>(g, tap_of(g, tap / g.kw, tap % g.kw), w[ch * taps + tap], x, y, nullptr, nullptr);
      if (bias)
        for (std::int64_t q = 0; q < p; ++q) y[q] += bias[ch];
    });
  }
}

void depthwise_backward(const CpuLayer& l, const ConvDims& d, float* dw, float* dx, bool accumulate) {
  const math::ConvGeom& g = d.g;
  const std::int64_t plane = g.h * g.w, p = d.pixels, taps = g.kh * g.kw, c = d.co;
  const float* w = l.params[0];
  if (dx) {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t sc = 0; sc < l.n * c; ++sc) {
      const std::int64_t ch = sc % c;
      float* dxp = dx + sc * plane;
      math::with_best_simd([&](auto) KILN_INLINE {
        if (!accumulate) std::fill(dxp, dxp + plane, 0.0f);
        for (std::int64_t tap = 0; tap < taps; ++tap)
          depthwise_tap<true>(g, tap_of(g, tap / g.kw, tap % g.kw), w[ch * taps + tap], nullptr, nullptr, dxp, l.dy + sc * p);
      });
    }
  }
  if (!dw) return;
  // dW[c][tap] = sum over samples and valid outputs of dy * x. Each tap keeps one float per
  // output column in the thread's workspace, adding the products of every row of every
  // sample in order (a vectorized multiply-add along the row, no reduction per row); then
  // the columns are summed in double. The order depends only on the shapes.
  // The workspace has a slot per thread of a team (see team_for), each larger than taps * ow.
  const int team = static_cast<int>(std::min<std::int64_t>(l.threads, std::clamp<std::int64_t>(l.n, 1, kMaxTeam)));
#pragma omp parallel num_threads(team)
  {
    float* cols = l.workspace + omp_get_thread_num() * d.slot.floats();
#pragma omp for schedule(static)
    for (std::int64_t ch = 0; ch < c; ++ch) {
      math::with_best_simd([&](auto) KILN_INLINE {
        std::fill(cols, cols + taps * g.ow, 0.0f);
        for (std::int64_t s = 0; s < l.n; ++s) {
          const float* x = l.x[0] + (s * c + ch) * plane;
          const float* dy = l.dy + (s * c + ch) * p;
          for (std::int64_t tap = 0; tap < taps; ++tap) {
            const Tap t = tap_of(g, tap / g.kw, tap % g.kw);
            const std::int64_t len = t.rx.end - t.rx.begin;
            float* acc = cols + tap * g.ow;
            for (std::int64_t oy = t.ry.begin; oy < t.ry.end; ++oy) {
              const float* r = dy + oy * g.ow + t.rx.begin;
              const float* v = x + (t.y0 + (oy - t.ry.begin) * g.sh) * g.w + t.x0;
              if (g.sw == 1)
                for (std::int64_t q = 0; q < len; ++q) acc[q] += r[q] * v[q];
              else
                for (std::int64_t q = 0; q < len; ++q) acc[q] += r[q] * v[q * g.sw];
            }
          }
        }
      });
      for (std::int64_t tap = 0; tap < taps; ++tap) {
        double sum = 0.0;
        for (std::int64_t q = 0; q < g.ow; ++q) sum += cols[tap * g.ow + q];
        dw[ch * taps + tap] = static_cast<float>(sum);
      }
    }
  }
}

void cpu_forward(const CpuLayer& l) {
  const onednn::ConvShape shape = onednn_shape(*l.layer, l.in_shape(), l.n, l.layout);
  const Kernel kernel = choose(shape, l.conv, l.threads).forward;
  const float* bias = l.layer->attrs.bias ? l.params[1] : nullptr;
  if (kernel == Kernel::onednn)
    return onednn::forward(shape, l.threads, l.x[0], l.params[0], bias, l.y, l.workspace, l.workspace_floats);
  if (kernel == Kernel::winograd)
    return winograd::forward(shape, l.threads, l.x[0], l.params[0], bias, l.y, l.workspace, l.workspace_floats);
  const ConvDims d(l);
  if (depthwise(d)) return depthwise_forward(l, d);
  const std::int64_t p = d.pixels;
  const float* w = l.params[0];
#pragma omp parallel num_threads(team_for(l))
  {
    const int t = omp_get_thread_num();
    float* slot = l.workspace + t * d.slot.floats();
    float* xt = slot + d.slot.col + d.slot.dyt + d.slot.dwt;
    float* yt = xt + d.slot.xt;
    const math::Range mine = my_samples(l.n, t, omp_get_num_threads());
    for (std::int64_t s = mine.begin; s < mine.end; ++s) {
      const float* x = l.x[0] + s * d.in_size;
      float* y = d.nhwc ? yt : l.y + s * d.out_size;
      if (d.nhwc) transpose(x, d.g.h * d.g.w, d.g.c, xt), x = xt;
      const float* col = d.slot.col ? slot : x;
      if (d.slot.col) im2col(d.g, x, slot);
      for (std::int64_t gi = 0; gi < d.groups; ++gi)
        gemm(Trans::no, Trans::no, d.co_g, p, d.k_g, 1.0f, w + gi * d.co_g * d.k_g, d.k_g, col + gi * d.k_g * p, p,
             0.0f, y + gi * d.co_g * p, p);
      for (std::int64_t c = 0; bias && c < d.co; ++c)
        for (std::int64_t q = 0; q < p; ++q) y[c * p + q] += bias[c];
      if (d.nhwc) transpose(yt, d.co, p, l.y + s * d.out_size);
    }
  }
}

// db[c] = sum over samples and pixels of dy, one thread per channel; in NHWC a channel's
// pixels are c floats apart, summed in the same order.
void bias_grad(const float* dy, std::int64_t n, std::int64_t c, std::int64_t p, bool nhwc, float* db, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t ch = 0; ch < c; ++ch) {
    double sum = 0.0;
    for (std::int64_t s = 0; s < n; ++s)
      sum += nhwc ? math::sum_floats(dy + s * c * p + ch, p, c) : math::sum_floats(dy + (s * c + ch) * p, p);
    db[ch] = static_cast<float>(sum);
  }
}

// dW is accumulated transposed, dW^T[K_g][co_g] += col * dY^T per group and sample, so that
// B = dY^T is a row-major matrix for the GEMM kernel (dY transposed per sample costs a copy
// of dY; the other orientation would need col^T, 25x larger for a 5x5 kernel). Summing the
// threads' partials transposes dW back.
void cpu_backward(const CpuLayer& l) {
  const ConvDims d(l);
  const std::int64_t p = d.pixels;
  const float* w = l.params[0];
  float* dw = l.grads.empty() ? nullptr : l.grads[0];
  float* db = l.layer->attrs.bias && l.grads.size() > 1 ? l.grads[1] : nullptr;
  float* dx = l.dx.empty() ? nullptr : l.dx[0];
  const bool accumulate = !l.accumulate.empty() && l.accumulate[0];
  if (db) bias_grad(l.dy, l.n, d.co, p, d.nhwc, db, l.threads);
  if (!dw && !dx) return;
  const onednn::ConvShape shape = onednn_shape(*l.layer, l.in_shape(), l.n, l.layout);
  const Choice c = choose(shape, l.conv, l.threads);
  // Winograd's passes run apart; oneDNN's or kiln's take what is left.
  if (dx && c.dx == Kernel::winograd) {
    winograd::backward_data(shape, l.threads, w, l.dy, dx, accumulate, l.workspace, l.workspace_floats);
    dx = nullptr;
  }
  if (dw && c.dw == Kernel::winograd) {
    winograd::backward_weights(shape, l.threads, l.x[0], l.dy, dw, l.workspace, l.workspace_floats);
    dw = nullptr;
  }
  if (!dw && !dx) return;
  if ((dw ? c.dw : c.dx) == Kernel::onednn)
    return onednn::backward(shape, l.threads, l.x[0], w, l.dy, dw, dx, accumulate, l.workspace, l.workspace_floats);
  if (depthwise(d)) return depthwise_backward(l, d, dw, dx, accumulate);
  const int team = team_for(l);
#pragma omp parallel num_threads(team)
  {
    const int t = omp_get_thread_num();
    float* col = l.workspace + t * d.slot.floats();
    float* dyt = col + d.slot.col;
    float* dwt = dyt + d.slot.dyt;
    float* xt = dwt + d.slot.dwt;
    float* yt = xt + d.slot.xt;
    const math::Range mine = my_samples(l.n, t, omp_get_num_threads());
    for (std::int64_t s = mine.begin; s < mine.end; ++s) {
      const float* dy = l.dy + s * d.out_size;
      if (dw) {
        // The input is read only here: it is not kept for a frozen layer.
        const float* x = l.x[0] + s * d.in_size;
        if (d.nhwc) transpose(x, d.g.h * d.g.w, d.g.c, xt), x = xt;
        if (d.slot.col) im2col(d.g, x, col);
        const float* cs = d.slot.col ? col : x;
        // dY^T: an NHWC sample is one already.
        const float* dy_t = d.nhwc ? dy : dyt;
        for (std::int64_t c = 0; !d.nhwc && c < d.co; ++c)
          for (std::int64_t q = 0; q < p; ++q) dyt[q * d.co + c] = dy[c * p + q];
        for (std::int64_t gi = 0; gi < d.groups; ++gi)
          gemm(Trans::no, Trans::no, d.k_g, d.co_g, p, 1.0f, cs + gi * d.k_g * p, p, dy_t + gi * d.co_g, d.co,
               s == mine.begin ? 0.0f : 1.0f, dwt + gi * d.k_g * d.co_g, d.co_g);
      }
      if (dx) {
        if (d.nhwc) transpose(dy, p, d.co, yt), dy = yt;
        // dx of the sample in CHW order: in place, or gathered in xt in NHWC. A pointwise
        // conv's dcol is that dx itself.
        float* dx_chw = d.nhwc ? xt : dx + s * d.in_size;
        const bool add = accumulate && !d.nhwc;
        float* dcol = d.slot.col ? col : dx_chw;
        const float beta = !d.slot.col && add ? 1.0f : 0.0f;
        for (std::int64_t gi = 0; gi < d.groups; ++gi)
          gemm(Trans::yes, Trans::no, d.k_g, p, d.co_g, 1.0f, w + gi * d.co_g * d.k_g, d.k_g, dy + gi * d.co_g * p, p,
               beta, dcol + gi * d.k_g * p, p);
        if (d.slot.col) col2im(d.g, col, dx_chw, add);
        if (d.nhwc) transpose_into(xt, d.g.c, d.g.h * d.g.w, dx + s * d.in_size, accumulate);
      }
    }
  }
  if (!dw) return;
  // Threads without samples left their partials unwritten.
  const int used = static_cast<int>(std::min<std::int64_t>(team, l.n));
  const std::int64_t dwt_at = d.slot.col + d.slot.dyt;
#pragma omp parallel for collapse(2) num_threads(l.threads) schedule(static)
  for (std::int64_t gi = 0; gi < d.groups; ++gi)
    for (std::int64_t c = 0; c < d.co_g; ++c)
      for (std::int64_t k = 0; k < d.k_g; ++k) {
        float sum = 0.0f;
        for (int t = 0; t < used; ++t) sum += l.workspace[t * d.slot.floats() + dwt_at + (gi * d.k_g + k) * d.co_g + c];
        dw[(gi * d.co_g + c) * d.k_g + k] = sum;
      }
}

std::string describe(const CpuLayer& l) {
  const onednn::ConvShape shape = onednn_shape(*l.layer, l.in_shape(), l.n, l.layout);
  const Choice c = choose(shape, l.conv, l.threads);
  const ConvDims d(l);
  const std::string own = depthwise(d) ? "kiln depthwise" : "kiln im2col+gemm";
  const auto name = [&](Kernel k) {
    return k == Kernel::kiln ? own : k == Kernel::winograd ? std::string("kiln winograd F(4x4,3x3)")
                                                           : "onednn " + onednn::describe(shape, l.threads);
  };
  if (c.forward == c.dx && c.dx == c.dw) return name(c.forward);
  if (c.dx == c.dw) return fmt::format("fwd {}, bwd {}", name(c.forward), name(c.dx));
  return fmt::format("fwd {}, dx {}, dw {}", name(c.forward), name(c.dx), name(c.dw));
}

}  // namespace

const OpDef& conv_op() {
  static const OpDef def{
      .kind = OpKind::conv,
      .name = "conv",
      .keys = kKeys,
      .has_params = true,
      .infer = infer,
      .params = params,
      .flops = flops,
      .backward_needs = needs,
  };
  return def;
}

const CpuOp& conv_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::conv,
      .supports = cpu_runs_every_dtype,
      .forward = cpu_forward,
      .backward = cpu_backward,
      .workspace_floats = workspace,
      .describe = describe,
  };
  return entry;
}

}  // namespace kiln::detail
