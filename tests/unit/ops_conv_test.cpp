// conv's CPU kernels (kiln's on every GEMM kernel and thread setup, oneDNN's on several
// thread counts) against a direct double-precision reference, determinism run to run, an empty and a partial batch (workspace sizing), and
// im2col's index math. Both layouts, finite differences and the dx/frozen contract are in
// BackendOps (tests/ops/backend_ops_conv_test.cpp).
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string_view>

#include "layers/gemm.hpp"
#include "math/im2col.hpp"
#include "op_harness.hpp"

namespace kiln::test {
namespace {

struct ConvCase {
  const char* name;
  std::int64_t c, h, w, out;
  Hw kernel;
  Hw stride{1, 1};
  Padding pad{};
  Hw dilation{1, 1};
  std::int64_t groups = 1;
  bool bias = true;
  std::int64_t n = 2;
};

Graph conv_graph(const ConvCase& k, bool frozen = false) {
  GraphBuilder b("t", Shape::chw(k.c, k.h, k.w), 10);
  LayerDef conv = layers::conv(k.out, k.kernel).stride(k.stride).pad(k.pad).groups(k.groups).bias(k.bias).named("c");
  conv.attrs.dilation = k.dilation;
  if (frozen) conv.frozen();
  b.add(conv).add(layers::flatten()).add(layers::linear(10));
  return b.build();
}

struct ConvRef {
  std::vector<double> y, dx, dw, db;
};

// The definition of the convolution and of its gradients under L = sum(y * dy), one
// multiply-add at a time, in double.
ConvRef reference(const OpHarness& h) {
  const Layer& layer = h.layer();
  const Attrs& a = layer.attrs;
  const Shape in = h.cpu.in_shape(), out = layer.shape;
  const std::int64_t n = h.cpu.n, groups = a.groups, ci_g = in.c / groups, co_g = out.c / groups;
  const Hw s = *a.stride;
  const std::vector<float>& x = h.x[0];
  const std::vector<float>& w = h.params[0];
  ConvRef r;
  r.y.assign(h.y.size(), 0.0);
  r.dx.assign(x.size(), 0.0);
  r.dw.assign(w.size(), 0.0);
  r.db.assign(static_cast<std::size_t>(out.c), 0.0);
  auto at = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t co = 0; co < out.c; ++co)
      for (std::int64_t oy = 0; oy < out.h; ++oy)
        for (std::int64_t ox = 0; ox < out.w; ++ox) {
          const std::size_t yi = at(((b * out.c + co) * out.h + oy) * out.w + ox);
          const double g = h.dy[yi];
          double acc = a.bias ? h.params[1][at(co)] : 0.0;
          for (std::int64_t cg = 0; cg < ci_g; ++cg) {
            const std::int64_t ci = co / co_g * ci_g + cg;
            for (std::int64_t i = 0; i < a.kernel.h; ++i)
              for (std::int64_t j = 0; j < a.kernel.w; ++j) {
                const std::int64_t iy = oy * s.h - a.pad.top + i * a.dilation.h;
                const std::int64_t ix = ox * s.w - a.pad.left + j * a.dilation.w;
                if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
                const std::size_t xi = at(((b * in.c + ci) * in.h + iy) * in.w + ix);
                const std::size_t wi = at(((co * ci_g + cg) * a.kernel.h + i) * a.kernel.w + j);
                acc += static_cast<double>(x[xi]) * w[wi];
                r.dx[xi] += g * w[wi];
                r.dw[wi] += g * x[xi];
              }
          }
          r.y[yi] = acc;
          r.db[at(co)] += g;
        }
  return r;
}

// Tolerances: forward sums at most a few hundred products of N(0,1) values in fp32;
// backward sums up to n*P of them (dW), hence the larger absolute term.
constexpr double kFwdAtol = 1e-4, kFwdRtol = 1e-4;
constexpr double kBwdAtol = 5e-4, kBwdRtol = 1e-4;

// Poisons everything the kernels must overwrite, so that a skipped write shows up as NaN.
void poison(OpHarness& h) {
  std::fill(h.y.begin(), h.y.end(), kNaN);
  std::fill(h.workspace.begin(), h.workspace.end(), kNaN);
  for (auto& g : h.grads) std::fill(g.begin(), g.end(), kNaN);
  for (auto& d : h.dx) std::fill(d.begin(), d.end(), kNaN);
}

// How the GEMMs run, for one scope: on which kernel, and with how many OpenBLAS threads.
// The kernels split work among their own threads only where the GEMMs do not use
// OpenBLAS's threads, so every combination needs testing.
struct GemmSetup {
  int threads;  // the kernel's (CpuLayer::threads)
  int blas;     // OpenBLAS's
  detail::GemmKernel kernel;
};

class GemmScope {
 public:
  explicit GemmScope(const GemmSetup& s)
      : saved_threads_(openblas_get_num_threads()), saved_kernel_(detail::gemm_kernel()) {
    openblas_set_num_threads(s.blas);
    supported_ = detail::set_gemm_kernel(s.kernel);
  }
  ~GemmScope() {
    openblas_set_num_threads(saved_threads_);
    detail::set_gemm_kernel(saved_kernel_);
  }
  GemmScope(const GemmScope&) = delete;
  GemmScope& operator=(const GemmScope&) = delete;
  // False when this CPU lacks the kernel (the setup is then skipped).
  bool supported() const { return supported_; }

 private:
  int saved_threads_;
  detail::GemmKernel saved_kernel_;
  bool supported_ = false;
};

constexpr detail::GemmKernel kAvx512 = detail::GemmKernel::avx512, kAvx2 = detail::GemmKernel::avx2,
                             kBlas = detail::GemmKernel::openblas;

// Serial; teams of 2 and 3 (uneven splits, batches smaller than the team); OpenBLAS's own
// threads; on every kernel.
constexpr GemmSetup kSetups[] = {{1, 1, kAvx512}, {2, 1, kAvx512}, {3, 1, kAvx512}, {2, 2, kAvx512},
                                 {1, 1, kAvx2},   {3, 1, kAvx2},   {2, 2, kAvx2},   {1, 1, kBlas},
                                 {2, 1, kBlas},   {3, 1, kBlas},   {2, 2, kBlas}};

const char* name(detail::GemmKernel k) { return k == kAvx512 ? "AVX-512" : k == kAvx2 ? "AVX2" : "OpenBLAS"; }

// Forward and backward, against the double-precision reference (which has zeros beyond a
// partial batch's samples, where the harness leaves y and dx untouched).
void expect_matches_reference(OpHarness& h, bool bias) {
  h.forward();
  h.backward();
  ConvRef r = reference(h);
  expect_close(r.y, h.y.data(), kFwdAtol, kFwdRtol, "y");
  expect_close(r.dx, h.dx[0].data(), kBwdAtol, kBwdRtol, "dx");
  expect_close(r.dw, h.grads[0].data(), kBwdAtol, kBwdRtol, "dW");
  if (bias) expect_close(r.db, h.grads[1].data(), kBwdAtol, kBwdRtol, "db");
}

class ConvSweep : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvSweep, MatchesReference) {
  const ConvCase& k = GetParam();
  for (const GemmSetup& setup : kSetups) {
    SCOPED_TRACE(::testing::Message() << "threads " << setup.threads << ", OpenBLAS threads " << setup.blas << ", "
                                      << name(setup.kernel) << " GEMM");
    GemmScope scope(setup);
    if (!scope.supported()) continue;
    OpHarness h(conv_graph(k), "c", k.n);
    h.cpu.threads = setup.threads;
    h.cpu.conv = CpuConv::kiln;
    poison(h);
    expect_matches_reference(h, k.bias);
  }
}

// Every path of the kernel: im2col by whole shifted planes (stride 1, 'same' width) and row
// by row, taps that see only padding, strides, dilations, groups, pointwise convs that read
// their input directly, and batches split evenly and unevenly among threads (or smaller
// than the team).
const ConvCase kCases[] = {
    {"k3_pad1", 3, 8, 8, 4, {3, 3}, {1, 1}, Padding::all(1)},
    {"k3_stride2_nobias", 4, 9, 7, 6, {3, 3}, {2, 2}, Padding::all(1), {1, 1}, 1, false, 3},
    {"k4_same_even", 4, 8, 8, 4, {4, 4}, {1, 1}, Padding::same_size()},
    {"k2x3_same_dil1x2", 2, 7, 9, 3, {2, 3}, {1, 1}, Padding::same_size(), {1, 2}},
    {"asym_pad_stride2x1", 3, 7, 6, 5, {3, 2}, {2, 1}, Padding{0, 2, 1, 0, false}},
    {"dil2_groups2", 4, 10, 10, 6, {3, 3}, {1, 1}, Padding::all(2), {2, 2}, 2},
    {"dil2x1_stride1x3", 2, 9, 11, 2, {3, 2}, {1, 3}, Padding{1, 0, 2, 1, false}, {2, 1}},
    {"groups4_asym", 8, 9, 9, 8, {3, 3}, {2, 2}, Padding{1, 0, 0, 1, false}, {1, 1}, 4},
    {"depthwise_same_dil2", 6, 8, 8, 6, {3, 3}, {1, 1}, Padding::same_size(), {2, 2}, 6},
    {"depthwise_x2", 3, 6, 6, 6, {3, 3}, {2, 2}, Padding::all(1), {1, 1}, 3, false},
    // The direct depthwise kernel (one filter per channel): strides, padding on one side,
    // taps that see only padding, odd batches over the threads.
    {"depthwise_stride2_bias", 8, 9, 9, 8, {3, 3}, {2, 2}, Padding::all(1), {1, 1}, 8, true, 5},
    {"depthwise_k5x3_asym", 4, 7, 6, 4, {5, 3}, {1, 2}, Padding{2, 0, 1, 1, false}, {1, 1}, 4, true, 3},
    {"depthwise_padding_only_taps", 3, 2, 3, 3, {3, 3}, {1, 1}, Padding::all(3), {1, 1}, 3, false, 2},
    {"depthwise_wide_plane", 16, 32, 32, 16, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 16, true, 3},
    {"pointwise_n1", 5, 8, 8, 7, {1, 1}, {1, 1}, {}, {1, 1}, 1, true, 1},
    {"pointwise_n3_groups", 6, 8, 8, 4, {1, 1}, {1, 1}, {}, {1, 1}, 2, true, 3},
    {"pointwise_wide", 64, 16, 16, 8, {1, 1}, {1, 1}, {}, {1, 1}, 2, true, 5},
    {"k1_stride2", 3, 7, 7, 4, {1, 1}, {2, 2}},
    {"padding_only_taps", 2, 2, 3, 3, {1, 1}, {2, 2}, Padding{3, 1, 0, 2, false}},
    {"corners_all_padding", 2, 3, 3, 2, {3, 3}, {1, 1}, Padding::all(2)},
    {"large_plane", 32, 40, 40, 4, {5, 5}, {1, 1}, Padding::all(2), {1, 1}, 1, true, 2},
    {"large_plane_stride2", 12, 41, 40, 3, {5, 5}, {2, 2}, Padding{2, 1, 2, 2, false}, {1, 1}, 1, true, 2},
    {"batch_37", 8, 16, 16, 5, {5, 5}, {1, 1}, Padding::all(2), {1, 1}, 1, true, 37},
    {"n1", 3, 6, 6, 2, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 1, true, 1},
};

INSTANTIATE_TEST_SUITE_P(Cpu, ConvSweep, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<ConvCase>& info) { return std::string(info.param.name); });

const ConvCase& find_case(std::string_view name) {
  for (const ConvCase& k : kCases)
    if (name == k.name) return k;
  throw std::logic_error("no case " + std::string(name));
}

constexpr const char* kWinogradKernel = "kiln winograd F(4x4,3x3)";

const ConvCase kContract{"contract", 4, 8, 8, 6, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 2, true, 3};

// Two runs of forward and backward from the same data give the same bits.
void expect_repeats(const ConvCase& k, int threads, CpuConv conv) {
  std::vector<std::vector<float>> first;
  for (int run = 0; run < 2; ++run) {
    OpHarness h(conv_graph(k), "c", k.n, /*seed=*/7);
    h.cpu.threads = threads;
    h.cpu.conv = conv;
    poison(h);
    h.forward();
    h.backward();
    std::vector<std::vector<float>> out{h.y, h.dx[0], h.grads[0], h.grads[1]};
    if (run == 0) first = out;
    for (std::size_t i = 0; run == 1 && i < out.size(); ++i)
      EXPECT_EQ(std::memcmp(out[i].data(), first[i].data(), out[i].size() * sizeof(float)), 0) << "tensor " << i;
  }
}

// No samples: nothing to read or write but the gradients, which are zero (on both kernels).
TEST(ConvCpu, EmptyBatchGivesZeroGradients) {
  for (CpuConv conv : {CpuConv::kiln, CpuConv::onednn}) {
    if (conv == CpuConv::onednn && !has_onednn()) continue;
    SCOPED_TRACE(to_string(conv));
    OpHarness h(conv_graph(kContract), "c", 0);
    h.cpu.conv = conv;
    poison(h);
    h.forward();
    h.backward();
    for (const auto& g : h.grads)
      for (float v : g) ASSERT_EQ(v, 0.0f);
  }
}

// Training resumes bit-exactly only if a step computes the same bits every time.
TEST(ConvCpu, DeterministicRunToRun) {
  for (const GemmSetup& setup : kSetups)
    for (const ConvCase& k : {kContract, find_case("large_plane"), find_case("batch_37")}) {
      SCOPED_TRACE(::testing::Message() << k.name << ", threads " << setup.threads << ", OpenBLAS threads "
                                        << setup.blas << ", " << name(setup.kernel) << " GEMM");
      GemmScope scope(setup);
      if (!scope.supported()) continue;
      expect_repeats(k, setup.threads, CpuConv::kiln);
    }
}

// The workspace is sized for the plan's batch; the last, partial batch of an epoch must fit
// in it and be computed alike.
TEST(ConvCpu, PartialBatch) {
  const Graph g = conv_graph(find_case("batch_37"));
  const Layer& layer = *g.find("c");
  const auto ws = detail::cpu_op(OpKind::conv).workspace_floats;
  ASSERT_NE(ws, nullptr);
  for (std::int64_t n = 1; n <= 40; ++n) EXPECT_LE(ws(layer, g.layers(), n, Layout::nchw), ws(layer, g.layers(), 40, Layout::nchw)) << n;
  GemmScope scope({3, 1, detail::gemm_kernel()});
  OpHarness h(g, "c", 37);
  h.cpu.n = 5;
  h.cpu.threads = 3;
  h.cpu.conv = CpuConv::kiln;
  expect_matches_reference(h, true);
}

// A forward, then backward adding dx into what the buffer holds (a layer read by two
// others), then backward with no dx wanted (a first layer): the results and the reference,
// dx's plus what the buffer held.
struct AccumulatedThenAlone {
  ConvRef ref;
  std::vector<float> dx, dw;
};

AccumulatedThenAlone accumulate_then_dw_alone(OpHarness& h) {
  h.forward();
  std::vector<float> before(h.dx[0].size());
  for (std::size_t i = 0; i < before.size(); ++i) before[i] = static_cast<float>(i % 13) * 0.25f - 1.5f;
  h.dx[0] = before;
  h.cpu.accumulate[0] = true;
  h.backward();
  AccumulatedThenAlone out{reference(h), h.dx[0], {}};
  for (std::size_t i = 0; i < before.size(); ++i) out.ref.dx[i] += before[i];
  h.cpu.dx[0] = nullptr;
  std::fill(h.grads[0].begin(), h.grads[0].end(), kNaN);
  h.backward();
  out.dw = h.grads[0];
  return out;
}

// ---- oneDNN's kernels (conv_onednn.cpp) --------------------------------------------------

#define KILN_SKIP_WITHOUT_ONEDNN() \
  if (!has_onednn()) GTEST_SKIP() << "this build of kiln has no oneDNN (libdnnl-dev)"

// Every case of the sweep on oneDNN, serial and on teams of 2 and 3, with the workspace the
// plan sizes (oneDNN's buffers where the default rule gives the layer to oneDNN) and with
// none (the kernel then uses memory of the thread's own).
TEST(OneDnnConv, MatchesReference) {
  KILN_SKIP_WITHOUT_ONEDNN();
  for (const ConvCase& k : kCases)
    for (int threads : {1, 2, 3})
      for (bool own_memory : {false, true}) {
        SCOPED_TRACE(::testing::Message() << k.name << ", threads " << threads << (own_memory ? ", no workspace" : ""));
        OpHarness h(conv_graph(k), "c", k.n);
        h.cpu.threads = threads;
        h.cpu.conv = CpuConv::onednn;
        if (own_memory) h.cpu.workspace = nullptr, h.cpu.workspace_floats = 0;
        poison(h);
        expect_matches_reference(h, k.bias);
      }
}

// dx added to what the gradient buffer holds (a layer read by two others), and dW alone
// (a first layer, whose input needs no gradient).
TEST(OneDnnConv, AccumulatesDxAndSkipsIt) {
  KILN_SKIP_WITHOUT_ONEDNN();
  for (const ConvCase& k : {kContract, find_case("depthwise_stride2_bias"), find_case("large_plane")}) {
    SCOPED_TRACE(k.name);
    OpHarness h(conv_graph(k), "c", k.n);
    h.cpu.threads = 2;
    h.cpu.conv = CpuConv::onednn;
    const AccumulatedThenAlone got = accumulate_then_dw_alone(h);
    expect_close(got.ref.dx, got.dx.data(), kBwdAtol, kBwdRtol, "dx accumulated");
    expect_close(got.ref.dw, got.dw.data(), kBwdAtol, kBwdRtol, "dW without dx");
  }
}

// At a fixed thread count oneDNN's results repeat to the bit (resume stays bit-exact).
TEST(OneDnnConv, RepeatsToTheBit) {
  KILN_SKIP_WITHOUT_ONEDNN();
  for (int threads : {1, 2, 3})
    for (const ConvCase& k : {kContract, find_case("large_plane"), find_case("batch_37"), find_case("depthwise_wide_plane")}) {
      SCOPED_TRACE(::testing::Message() << k.name << ", threads " << threads);
      expect_repeats(k, threads, CpuConv::onednn);
    }
}

// The partial last batch of an epoch runs on primitives of its own size in the plan's
// workspace (a layer the default rule gives to oneDNN: 16 input channels, 3x3).
TEST(OneDnnConv, PartialBatch) {
  KILN_SKIP_WITHOUT_ONEDNN();
  const ConvCase k{"batch_13_wide", 16, 10, 10, 8, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 1, true, 13};
  OpHarness h(conv_graph(k), "c", k.n);
  ASSERT_GT(h.cpu.workspace_floats, 0);
  h.cpu.n = 5;
  h.cpu.threads = 2;
  h.cpu.conv = CpuConv::onednn;
  expect_matches_reference(h, true);
}

// The automatic choice, as the README states it: Winograd for 3x3 'same' convs of 16 or more
// channels each way on planes of more than 16 pixels; oneDNN for the other 3x3 convs of 16 or
// more input channels (kiln's GEMM forward on planes of 16 pixels or fewer) and for depthwise
// convs; kiln for 1x1 convs and first layers; in NHWC oneDNN for all.
TEST(OneDnnConv, AutomaticChoice) {
  KILN_SKIP_WITHOUT_ONEDNN();
  const auto kernels = [](const ConvCase& k) {
    OpHarness h(conv_graph(k), "c", k.n);
    h.cpu.threads = 2;
    return detail::cpu_op(OpKind::conv).describe(h.cpu);
  };
  const ConvCase wide{"wide", 64, 16, 16, 64, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 1, false, 2};
  const ConvCase small_plane{"small_plane", 64, 4, 4, 64, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 1, false, 2};
  const ConvCase rgb{"rgb", 3, 32, 32, 64, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 1, false, 2};
  const ConvCase pointwise{"pointwise", 64, 16, 16, 128, {1, 1}, {1, 1}, {}, {1, 1}, 1, false, 2};
  const ConvCase depthwise{"depthwise", 32, 16, 16, 32, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 32, false, 2};
  const auto starts = [](const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; };
  EXPECT_EQ(kernels(wide), kWinogradKernel);
  EXPECT_PRED2(starts, kernels(small_plane), "fwd kiln im2col+gemm, bwd onednn");
  EXPECT_EQ(kernels(rgb), "kiln im2col+gemm");
  EXPECT_EQ(kernels(pointwise), "kiln im2col+gemm");
  EXPECT_PRED2(starts, kernels(depthwise), "onednn ");
  OpHarness nhwc(conv_graph(pointwise), "c", 2, 1, Layout::nhwc);
  nhwc.cpu.threads = 2;
  EXPECT_PRED2(starts, detail::cpu_op(OpKind::conv).describe(nhwc.cpu), "onednn ");
}

// ---- Winograd's F(4x4, 3x3) (conv_winograd.cpp) ---------------------------------------

// 3x3, stride 1, pad 1 convs the default rule gives to Winograd (16 or more channels each
// way, planes of more than 16 pixels): channel counts that are not multiples of 8 (the
// vector lanes), planes that are not multiples of 4 (partial tiles), more tiles than one
// chunk of the weight gradient's sum (320 > 256), and a batch too small to give each
// thread a chunk of its own (the threads then share each chunk).
const ConvCase kWinograd[] = {
    {"wino_16", 16, 8, 8, 16, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 1, true, 2},
    {"wino_odd_sizes", 17, 7, 9, 20, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 1, true, 3},
    {"wino_many_tiles", 16, 32, 32, 24, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 1, false, 5},
    {"wino_shared_chunks", 32, 6, 6, 40, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 1, true, 2},
};

std::string kernels_of(const OpHarness& h) { return detail::cpu_op(OpKind::conv).describe(h.cpu); }

// Winograd's transforms scale by up to 8 (and 1/24) on the way in and out, so its rounding
// error is a few ulps of the tensor's largest values rather than of each element: every
// element within this fraction of the reference's largest magnitude (measured worst case
// over these cases and setups: 5e-6 for y and dx, 8e-6 for dW; float rounding of
// the direct sum alone is about 1e-7).
constexpr double kWinogradTol = 2e-5;

void expect_close_to_scale(const std::vector<double>& ref, const float* got, const char* what) {
  double scale = 0, worst = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) scale = std::max(scale, std::fabs(ref[i]));
  for (std::size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::fabs(got[i] - ref[i]));
  EXPECT_LE(worst, kWinogradTol * scale) << what << ": largest error " << worst << ", " << worst / scale
                                         << " of the largest magnitude " << scale;
  if (std::getenv("KILN_PRINT_WINOGRAD_ERROR")) std::printf("%s: %.3g of %.3g\n", what, worst / scale, scale);
}

void expect_winograd_matches_reference(OpHarness& h, bool bias) {
  h.forward();
  h.backward();
  ConvRef r = reference(h);
  expect_close_to_scale(r.y, h.y.data(), "y");
  expect_close_to_scale(r.dx, h.dx[0].data(), "dx");
  expect_close_to_scale(r.dw, h.grads[0].data(), "dW");
  if (bias) expect_close(r.db, h.grads[1].data(), kBwdAtol, kBwdRtol, "db");
}

// Every pass against the double-precision reference, on every GEMM kernel and thread
// setup, with the workspace the plan sizes and with none (memory of the thread's own).
TEST(WinogradConv, MatchesReference) {
  for (const ConvCase& k : kWinograd)
    for (const GemmSetup& setup : kSetups)
      for (bool own_memory : {false, true}) {
        GemmScope scope(setup);
        if (!scope.supported()) continue;
        SCOPED_TRACE(::testing::Message() << k.name << ", " << name(setup.kernel) << ", threads " << setup.threads
                                          << ", OpenBLAS threads " << setup.blas << (own_memory ? ", no workspace" : ""));
        OpHarness h(conv_graph(k), "c", k.n);
        h.cpu.threads = setup.threads;
        ASSERT_EQ(kernels_of(h), kWinogradKernel);
        if (own_memory) h.cpu.workspace = nullptr, h.cpu.workspace_floats = 0;
        poison(h);
        expect_winograd_matches_reference(h, k.bias);
      }
}

// The same bits whatever the thread count: each output, dx and dW element is computed by
// the same operations in the same order however the tiles are split.
TEST(WinogradConv, SameBitsOnAnyThreadCount) {
  for (const ConvCase& k : kWinograd) {
    SCOPED_TRACE(k.name);
    std::vector<std::vector<float>> first;
    for (int threads : {1, 2, 3, 4}) {
      OpHarness h(conv_graph(k), "c", k.n, /*seed=*/3);
      h.cpu.threads = threads;
      poison(h);
      h.forward();
      h.backward();
      std::vector<std::vector<float>> out{h.y, h.dx[0], h.grads[0]};
      if (first.empty()) first = out;
      for (std::size_t i = 0; i < out.size(); ++i)
        EXPECT_EQ(std::memcmp(out[i].data(), first[i].data(), out[i].size() * sizeof(float)), 0)
            << "tensor " << i << ", threads " << threads;
    }
  }
}

// dx added to what the gradient buffer holds, and dW alone (no dx wanted).
TEST(WinogradConv, AccumulatesDxAndSkipsIt) {
  for (const ConvCase& k : {kWinograd[1], kWinograd[3]}) {
    SCOPED_TRACE(k.name);
    OpHarness h(conv_graph(k), "c", k.n);
    h.cpu.threads = 2;
    ASSERT_EQ(kernels_of(h), kWinogradKernel);
    const AccumulatedThenAlone got = accumulate_then_dw_alone(h);
    expect_close_to_scale(got.ref.dx, got.dx.data(), "dx accumulated");
    expect_close_to_scale(got.ref.dw, got.dw.data(), "dW without dx");
  }
}

// An epoch's partial last batch in the plan's workspace, and an empty one (zero gradients).
TEST(WinogradConv, PartialAndEmptyBatch) {
  const ConvCase k = kWinograd[1];
  for (std::int64_t n : {std::int64_t{1}, std::int64_t{2}, std::int64_t{0}}) {
    SCOPED_TRACE(n);
    OpHarness h(conv_graph(k), "c", k.n);
    h.cpu.n = n;
    h.cpu.threads = 2;
    if (n == 0) {
      poison(h);
      h.forward();
      h.backward();
      for (const auto& g : h.grads)
        for (float v : g) ASSERT_EQ(v, 0.0f);
      continue;
    }
    expect_winograd_matches_reference(h, true);
  }
}

// The index math in math/im2col.hpp, which the CUDA kernels will use element by element,
// against its definition: output o reads input o*stride - pad + k*dilation through tap k.
TEST(Im2colMath, RangesReadersAndSourcesAgree) {
  for (std::int64_t in : {1, 2, 5, 8})
    for (std::int64_t k : {0, 1, 2, 4})
      for (std::int64_t stride : {1, 2, 3})
        for (std::int64_t pad : {0, 1, 3})
          for (std::int64_t dil : {1, 2}) {
            const std::int64_t out = 7;  // more outputs than the input has: some read only padding
            const math::Range r = math::conv_valid(in, out, k, stride, pad, dil);
            for (std::int64_t o = 0; o < out; ++o) {
              const std::int64_t src = o * stride - pad + k * dil;
              ASSERT_EQ(math::conv_source(o, k, stride, pad, dil), src);
              ASSERT_EQ(o >= r.begin && o < r.end, src >= 0 && src < in)
                  << "in " << in << " k " << k << " stride " << stride << " pad " << pad << " dil " << dil << " o "
                  << o;
            }
            for (std::int64_t i = 0; i < in; ++i) {
              const std::int64_t o = math::conv_reader(i, out, k, stride, pad, dil);
              if (o >= 0) {
                ASSERT_LT(o, out);
                ASSERT_EQ(math::conv_source(o, k, stride, pad, dil), i);
              } else {
                for (std::int64_t q = 0; q < out; ++q) ASSERT_NE(math::conv_source(q, k, stride, pad, dil), i);
              }
            }
          }
  // Taps that reach past every edge of the input, with strides and dilations.
  const math::ConvGeom geoms[] = {
      {.c = 3, .h = 5, .w = 4, .oh = 3, .ow = 4, .kh = 2, .kw = 3, .sh = 2, .sw = 1, .ph = 1, .pw = 1, .dh = 2, .dw = 1},
      {.c = 2, .h = 4, .w = 7, .oh = 4, .ow = 3, .kh = 3, .kw = 2, .sh = 1, .sw = 3, .ph = 2, .pw = 0, .dh = 1, .dw = 2}};
  for (const math::ConvGeom& g : geoms)
    for (std::int64_t ci = 0; ci < g.c; ++ci)
      for (std::int64_t i = 0; i < g.kh; ++i)
        for (std::int64_t j = 0; j < g.kw; ++j)
          for (std::int64_t p = 0; p < g.pixels(); ++p) {
            const std::int64_t y = p / g.ow * g.sh - g.ph + i * g.dh, x = p % g.ow * g.sw - g.pw + j * g.dw;
            const std::int64_t expected = y < 0 || y >= g.h || x < 0 || x >= g.w ? -1 : (ci * g.h + y) * g.w + x;
            ASSERT_EQ(math::im2col_source(g, math::col_row(g, ci, i, j), p), expected)
                << ci << " " << i << " " << j << " " << p;
          }
}

// cifar_quick's convolutions at batch 128 on 2 threads, on the best GEMM kernel of this CPU.
// Not a pass/fail test:
//   kiln_unit_tests --gtest_also_run_disabled_tests --gtest_filter='*Bench*'
TEST(ConvBench, DISABLED_CifarQuick) {
  GemmScope scope({2, 2, detail::gemm_kernel()});
  struct Shape3 {
    const char* name;
    std::int64_t c, hw, out;
    bool dx;
  };
  const Shape3 convs[] = {{"conv1", 3, 32, 32, false}, {"conv2", 32, 16, 32, true}, {"conv3", 32, 8, 64, true}};
  using clock = std::chrono::steady_clock;
  for (const Shape3& s : convs) {
    const ConvCase k{s.name, s.c, s.hw, s.hw, s.out, {5, 5}, {1, 1}, Padding::all(2), {1, 1}, 1, true, 128};
    OpHarness h(conv_graph(k), "c", 128);
    h.cpu.threads = 2;
    h.cpu.conv = CpuConv::kiln;
    if (!s.dx) h.cpu.dx[0] = nullptr;  // conv1 reads the model input
    double fwd = 1e9, bwd = 1e9;
    for (int rep = 0; rep < 12; ++rep) {
      auto t0 = clock::now();
      h.forward();
      auto t1 = clock::now();
      h.backward();
      auto t2 = clock::now();
      if (rep < 2) continue;
      fwd = std::min(fwd, std::chrono::duration<double, std::milli>(t1 - t0).count());
      bwd = std::min(bwd, std::chrono::duration<double, std::milli>(t2 - t1).count());
    }
    std::printf(
        "%s %lldx%lldx%lld -> %lld, 5x5 pad 2, batch 128, 2 threads: forward %.2f ms, backward %.2f ms, total %.2f "
        "ms\n",
        s.name, static_cast<long long>(s.c), static_cast<long long>(s.hw), static_cast<long long>(s.hw),
        static_cast<long long>(s.out), fwd, bwd, fwd + bwd);
  }
}

}  // namespace
}  // namespace kiln::test
