// groupnorm, mul and upsample: built from specs (and the diagnostics of bad ones), and their
// CPU kernels against direct double-precision references (PyTorch's definitions) and finite
// differences, in NCHW and NHWC. Each op is one OpCase, so the cases move as they are into a
// parameterized all-backends suite.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "op_harness.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

// ---- specs ------------------------------------------------------------------------------

const char* kHeader = "name: t\ninput: [8, 6, 5]\nclasses: 10\nlayers:\n";
const char* kTail = "  - {op: flatten}\n  - {op: linear, out: 10}\n";

std::string spec(const std::string& layers) { return std::string(kHeader) + layers + kTail; }

TEST(NewOpsSpec, EachOpBuildsFromYaml) {
  Graph g = parse_spec(spec("  - {name: gn, op: groupnorm, groups: 4, eps: 1e-3}\n"
                                  "  - {name: pool, op: global_avgpool}\n"
                                  "  - {name: vec, op: flatten}\n"
                                  "  - {name: gate, op: sigmoid}\n"
                                  "  - {name: se, op: mul, from: [gn, gate]}\n"
                                  "  - {name: se2, op: mul, from: [se, pool]}\n"
                                  "  - {name: se3, op: mul, from: [se2, gn]}\n"
                                  "  - {name: up, op: upsample, scale: [2, 3]}\n"))
                .graph;
  const Layer& gn = *g.find("gn");
  EXPECT_EQ(gn.op, OpKind::groupnorm);
  EXPECT_EQ(gn.attrs.groups, 4);
  EXPECT_DOUBLE_EQ(gn.attrs.eps, 1e-3);
  EXPECT_EQ(gn.shape, Shape::chw(8, 6, 5));
  ASSERT_EQ(gn.params.size(), 2u);
  EXPECT_EQ(g.params()[static_cast<std::size_t>(gn.params[0])].name, "gn.weight");
  EXPECT_EQ(g.params()[static_cast<std::size_t>(gn.params[1])].name, "gn.bias");
  EXPECT_EQ(g.params()[static_cast<std::size_t>(gn.params[0])].dims, std::vector<std::int64_t>{8});
  EXPECT_EQ(gn.flops, 2 * 8 * 6 * 5);
  EXPECT_EQ(g.find("se")->shape, Shape::chw(8, 6, 5));
  EXPECT_EQ(g.find("se2")->shape, Shape::chw(8, 6, 5));
  EXPECT_EQ(g.find("se3")->shape, Shape::chw(8, 6, 5));
  EXPECT_EQ(g.find("se")->flops, 8 * 6 * 5);
  const Layer& up = *g.find("up");
  EXPECT_EQ(up.attrs.scale, (Hw{2, 3}));
  EXPECT_EQ(up.shape, Shape::chw(8, 12, 15));
  EXPECT_EQ(up.flops, 0);
  EXPECT_EQ(op_name(OpKind::groupnorm), "groupnorm");
  EXPECT_EQ(op_from_name("mul"), OpKind::mul);
  EXPECT_EQ(op_from_name("upsample"), OpKind::upsample);
}

TEST(NewOpsSpec, BuilderMatchesYaml) {
  GraphBuilder b("t", Shape::chw(8, 6, 5), 10);
  b.add(layers::groupnorm(2).named("gn"))
      .add(layers::global_avgpool().named("pool"))
      .add(layers::mul({"gn", "pool"}).named("se"))
      .add(layers::upsample(2).named("up"))
      .add(layers::flatten())
      .add(layers::linear(10));
  Graph g = b.build();
  EXPECT_EQ(g.find("gn")->attrs.groups, 2);
  EXPECT_EQ(g.find("up")->shape, Shape::chw(8, 12, 10));
}

TEST(NewOpsSpec, GroupsMustDivideChannels) {
  auto d = only_error(spec("  - {name: gn, op: groupnorm, groups: 3}\n"));
  EXPECT_EQ(d.layer, "gn");
  EXPECT_EQ(d.loc.line, 5);
  EXPECT_EQ(d.context, "groupnorm, 3 groups");
  EXPECT_EQ(d.message, "groups: 3 does not divide the 8 channels of its input 'input' (8x6x5)");
  ASSERT_EQ(d.notes.size(), 1u);
  EXPECT_EQ(d.notes[0], "8 channels / 3 groups = 2 remainder 2");
  EXPECT_EQ(d.hint, "use a divisor of 8: 1, 2, 4 or 8");
}

TEST(NewOpsSpec, GroupnormNeedsGroupsAndPositiveEps) {
  auto missing = only_error(spec("  - {name: gn, op: groupnorm}\n"));
  EXPECT_EQ(missing.message, "missing required key 'groups'");
  EXPECT_EQ(missing.hint, "groupnorm needs: groups");
  auto zero = only_error(spec("  - {name: gn, op: groupnorm, groups: 0}\n"));
  EXPECT_EQ(zero.message, "groups must be at least 1, got 0");
  auto eps = only_error(spec("  - {name: gn, op: groupnorm, groups: 2, eps: 0}\n"));
  EXPECT_EQ(eps.message, "eps must be positive, got 0");
}

TEST(NewOpsSpec, MulShapesMustMatchOrBroadcastPerChannel) {
  auto d = only_error(spec("  - {name: a, op: conv, out: 4, kernel: 1}\n"
                           "  - {name: m, op: mul, from: [input, a]}\n"));
  EXPECT_EQ(d.layer, "m");
  EXPECT_EQ(d.loc.line, 6);
  EXPECT_EQ(d.message,
            "cannot multiply 'input' (8x6x5) by 'a' (4x6x5): the shapes differ and the second is not one value per "
            "channel of the first");
  EXPECT_EQ(d.hint, "the second input must be 8x6x5 or one value per channel (8x1x1 or 8 features)");
}

TEST(NewOpsSpec, MulGateFirstSaysToSwap) {
  auto d = only_error(spec("  - {name: pool, op: global_avgpool}\n"
                           "  - {name: m, op: mul, from: [pool, input]}\n"));
  EXPECT_EQ(d.hint, "the per-channel gate goes second: from: [input, pool]");
}

TEST(NewOpsSpec, MulGateOfWrongWidthSaysHowManyValues) {
  auto d = only_error(spec("  - {name: pool, op: global_avgpool}\n"
                           "  - {name: vec, op: flatten}\n"
                           "  - {name: fc, op: linear, out: 3}\n"
                           "  - {name: m, op: mul, from: [input, fc]}\n"));
  EXPECT_EQ(d.message,
            "cannot multiply 'input' (8x6x5) by 'fc' (3): the shapes differ and the second is not one value per channel "
            "of the first");
  EXPECT_EQ(d.hint, "a gate over 'input' needs 8 values, one per channel; make it with linear, out: 8");
}

TEST(NewOpsSpec, MulTakesExactlyTwoInputs) {
  auto d = only_error(spec("  - {name: m, op: mul, from: [input, input, input]}\n"));
  EXPECT_EQ(d.message, "mul takes exactly 2 inputs, but from: names 3");
}

TEST(NewOpsSpec, UpsampleScaleAndInput) {
  auto zero = only_error(spec("  - {name: up, op: upsample, scale: 0}\n"));
  EXPECT_EQ(zero.layer, "up");
  EXPECT_EQ(zero.message, "scale must be a whole factor of at least 1, got 0");
  EXPECT_EQ(zero.hint,
            "nearest upsampling repeats each pixel scale times; to shrink a feature map, use a pool or a strided conv");
  auto missing = only_error(spec("  - {name: up, op: upsample}\n"));
  EXPECT_EQ(missing.message, "missing required key 'scale'");
  auto vec = errors_of("name: t\ninput: [8, 6, 5]\nclasses: 10\nlayers:\n  - {op: flatten}\n"
                       "  - {name: up, op: upsample, scale: 2}\n  - {op: linear, out: 10}\n");
  ASSERT_FALSE(vec.empty());
  EXPECT_EQ(vec[0].message,
            "expects a C x H x W input (4-D with the batch), but its input 'flatten1' is a vector of 240 features (2-D "
            "with the batch)");
}

// ---- CPU kernels --------------------------------------------------------------------------

using Vec = std::vector<double>;

// What an op's reference computes from its inputs and parameters (all NCHW, in double).
struct Reference {
  std::vector<Vec> x;   // inputs
  std::vector<Vec> p;   // parameters
  Vec dy;
  Vec y;                // outputs of the reference
  std::vector<Vec> dx;  // one per input
  std::vector<Vec> dp;  // one per parameter
};

struct OpCase {
  const char* name;
  std::function<Graph()> graph;  // holds the layer under test, named "op"
  std::function<void(const Layer&, std::span<const Shape> in, std::int64_t n, Reference&)> reference;
};

// NCHW to NHWC (to_nhwc) or back, for images (vectors lie the same way in both).
std::vector<float> relayout(const std::vector<float>& v, const Shape& s, std::int64_t n, bool to_nhwc) {
  if (!s.is_image()) return v;
  const math::Dims4 nchw{n, s.c, s.h, s.w, false}, nhwc{n, s.c, s.h, s.w, true};
  std::vector<float> out(v.size());
  for (std::int64_t i = 0; i < nchw.count(); ++i) {
    const math::Index4 e = math::index_of(nchw, i);
    if (to_nhwc) out[static_cast<std::size_t>(nhwc.at(e.n, e.c, e.h, e.w))] = v[static_cast<std::size_t>(i)];
    else out[static_cast<std::size_t>(i)] = v[static_cast<std::size_t>(nhwc.at(e.n, e.c, e.h, e.w))];
  }
  return out;
}

// A buffer of a plan in `layout`, read back in NCHW.
std::vector<float> as_nchw(const std::vector<float>& v, const Shape& s, std::int64_t n, Layout layout) {
  return layout == Layout::nhwc ? relayout(v, s, n, false) : v;
}

Vec widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// Group normalization, PyTorch's nn.GroupNorm, with its gradients written out.
void groupnorm_reference(const Layer& layer, std::span<const Shape> in, std::int64_t n, Reference& r) {
  const Shape s = in[0];
  const std::int64_t groups = layer.attrs.groups, cpg = s.c / groups, hw = s.h * s.w, m = cpg * hw;
  const double eps = layer.attrs.eps;
  const Vec &x = r.x[0], &w = r.p[0], &b = r.p[1];
  r.y.assign(x.size(), 0);
  r.dx.assign(1, Vec(x.size(), 0));
  r.dp.assign(2, Vec(static_cast<std::size_t>(s.c), 0));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::size_t base = static_cast<std::size_t>((i * s.c + g * cpg) * hw);  // a group is contiguous in NCHW
      double mean = 0, var = 0;
      for (std::int64_t j = 0; j < m; ++j) mean += x[base + static_cast<std::size_t>(j)];
      mean /= static_cast<double>(m);
      for (std::int64_t j = 0; j < m; ++j) var += std::pow(x[base + static_cast<std::size_t>(j)] - mean, 2);
      var /= static_cast<double>(m);
      const double invstd = 1 / std::sqrt(var + eps);
      double sum_g = 0, sum_g_xhat = 0;  // g = dy * w, the gradient of xhat
      for (std::int64_t j = 0; j < m; ++j) {
        const std::size_t k = base + static_cast<std::size_t>(j);
        const auto c = static_cast<std::size_t>(g * cpg + j / hw);
        const double xhat = (x[k] - mean) * invstd;
        r.y[k] = xhat * w[c] + b[c];
        r.dp[0][c] += r.dy[k] * xhat;
        r.dp[1][c] += r.dy[k];
        sum_g += r.dy[k] * w[c];
        sum_g_xhat += r.dy[k] * w[c] * xhat;
      }
      for (std::int64_t j = 0; j < m; ++j) {
        const std::size_t k = base + static_cast<std::size_t>(j);
        const auto c = static_cast<std::size_t>(g * cpg + j / hw);
        const double xhat = (x[k] - mean) * invstd;
        r.dx[0][k] = invstd * (r.dy[k] * w[c] - sum_g / static_cast<double>(m) - xhat * sum_g_xhat / static_cast<double>(m));
      }
    }
}

// a * b, b of a's shape or broadcast from [n, c] over h and w.
void mul_reference(const Layer&, std::span<const Shape> in, std::int64_t n, Reference& r) {
  const Shape s = in[0];
  const bool broadcast = in[1] != in[0];
  const std::int64_t hw = s.h * s.w;
  const Vec &a = r.x[0], &b = r.x[1];
  r.y.assign(a.size(), 0);
  r.dx = {Vec(a.size(), 0), Vec(b.size(), 0)};
  for (std::size_t k = 0; k < a.size(); ++k) {
    const std::size_t kb = broadcast ? k / static_cast<std::size_t>(hw) : k;  // NCHW: (n, c) = k / hw
    r.y[k] = a[k] * b[kb];
    r.dx[0][k] = r.dy[k] * b[kb];
    r.dx[1][kb] += r.dy[k] * a[k];
  }
  (void)n;
}

// Nearest upsampling: y[h, w] = x[h / sh, w / sw]; dx sums the outputs each input fed.
void upsample_reference(const Layer& layer, std::span<const Shape> in, std::int64_t n, Reference& r) {
  const Shape s = in[0];
  const Hw f = layer.attrs.scale;
  const std::int64_t oh = s.h * f.h, ow = s.w * f.w;
  r.y.assign(static_cast<std::size_t>(n * s.c * oh * ow), 0);
  r.dx.assign(1, Vec(r.x[0].size(), 0));
  for (std::int64_t nc = 0; nc < n * s.c; ++nc)
    for (std::int64_t h = 0; h < oh; ++h)
      for (std::int64_t w = 0; w < ow; ++w) {
        const auto o = static_cast<std::size_t>((nc * oh + h) * ow + w);
        const auto i = static_cast<std::size_t>((nc * s.h + h / f.h) * s.w + w / f.w);
        r.y[o] = r.x[0][i];
        r.dx[0][i] += r.dy[o];
      }
}

Graph graph_with(const std::vector<LayerDef>& defs, Shape input = Shape::chw(8, 5, 6)) {
  GraphBuilder b("t", input, 10);
  for (const LayerDef& d : defs) b.add(d);
  b.add(layers::flatten()).add(layers::linear(10));
  return b.build();
}

std::vector<OpCase> cases() {
  return {
      {"groupnorm4", [] { return graph_with({layers::groupnorm(4).named("op")}); }, groupnorm_reference},
      {"groupnorm1", [] { return graph_with({layers::groupnorm(1).eps(1e-3).named("op")}); }, groupnorm_reference},
      {"groupnorm_per_channel", [] { return graph_with({layers::groupnorm(8).named("op")}); }, groupnorm_reference},
      {"groupnorm_features",
       [] { return graph_with({layers::flatten().named("v"), layers::groupnorm(3).named("op")}, Shape::chw(3, 2, 2)); },
       groupnorm_reference},
      {"mul_same", [] { return graph_with({layers::relu().named("a"), layers::mul({"input", "a"}).named("op")}); },
       mul_reference},
      {"mul_gate_vector",
       [] {
         return graph_with({layers::global_avgpool().named("p"), layers::flatten().named("v"),
                            layers::mul({"input", "v"}).named("op")});
       },
       mul_reference},
      {"mul_gate_c11",
       [] { return graph_with({layers::global_avgpool().named("p"), layers::mul({"input", "p"}).named("op")}); },
       mul_reference},
      {"upsample2", [] { return graph_with({layers::upsample(2).named("op")}); }, upsample_reference},
      {"upsample1x3", [] { return graph_with({layers::upsample(Hw{1, 3}).named("op")}); }, upsample_reference},
  };
}

void PrintTo(const OpCase& op, std::ostream* os) { *os << op.name; }

class NewOpsCpu : public ::testing::TestWithParam<std::tuple<OpCase, Layout>> {};

// The harness's buffers, in NCHW, as the reference reads them.
Reference reference_of(const OpCase& op, OpHarness& h, std::int64_t n) {
  Reference r;
  std::vector<Shape> in;
  for (std::size_t i = 0; i < h.x.size(); ++i) {
    r.x.push_back(widen(h.x[i]));
    in.push_back(h.cpu.in_shape(i));
  }
  for (const auto& p : h.params) r.p.push_back(widen(p));
  r.dy = widen(h.dy);
  op.reference(h.layer(), in, n, r);
  return r;
}

TEST_P(NewOpsCpu, ForwardBackwardMatchReference) {
  const auto& [op, layout] = GetParam();
  constexpr std::int64_t n = 3;
  OpHarness h(op.graph(), "op", n);
  for (auto& p : h.params)  // a weight away from 1, a bias away from 0
    for (auto& v : p) v = 0.5f + 0.25f * v;
  const Reference r = reference_of(op, h, n);  // from the NCHW buffers, before relayout
  const bool nhwc = layout == Layout::nhwc;
  h.cpu.layout = layout;
  if (nhwc) {
    for (std::size_t i = 0; i < h.x.size(); ++i) h.x[i] = relayout(h.x[i], h.cpu.in_shape(i), n, true);
    h.dy = relayout(h.dy, h.layer().shape, n, true);
  }
  h.bind();

  h.forward();
  expect_close(r.y, as_nchw(h.y, h.layer().shape, n, layout).data(), 1e-5, 1e-5, "y");

  // Overwrite (dx starts as NaN), then add into a random dx, then a null dx is left alone.
  for (auto& d : h.dx) std::fill(d.begin(), d.end(), std::numeric_limits<float>::quiet_NaN());
  h.backward();
  for (std::size_t i = 0; i < h.dx.size(); ++i) {
    const std::string what = "dx" + std::to_string(i);
    for (float v : h.dx[i]) ASSERT_FALSE(std::isnan(v)) << what << " not fully written";
    expect_close(r.dx[i], as_nchw(h.dx[i], h.cpu.in_shape(i), n, layout).data(), 1e-5, 1e-4, what);
  }
  for (std::size_t p = 0; p < r.dp.size(); ++p) expect_close(r.dp[p], h.grads[p].data(), 1e-4, 1e-4, "dparam");

  std::vector<std::vector<float>> before;
  for (auto& d : h.dx) {
    before.push_back(h.random(static_cast<std::int64_t>(d.size())));
    d = before.back();
  }
  h.cpu.accumulate.assign(h.dx.size(), true);
  h.backward();
  for (std::size_t i = 0; i < h.dx.size(); ++i) {
    Vec sum(r.dx[i].size());
    const std::vector<float> start = as_nchw(before[i], h.cpu.in_shape(i), n, layout);
    for (std::size_t k = 0; k < sum.size(); ++k) sum[k] = start[k] + r.dx[i][k];
    expect_close(sum, as_nchw(h.dx[i], h.cpu.in_shape(i), n, layout).data(), 1e-5, 1e-4, "accumulated dx");
  }

  h.cpu.accumulate.assign(h.dx.size(), false);
  for (auto& d : h.dx) std::fill(d.begin(), d.end(), 7.0f);
  for (auto& d : h.cpu.dx) d = nullptr;
  for (auto& g : h.cpu.grads) g = nullptr;
  h.backward();  // nothing to write: must not touch the buffers (nor crash)
  for (const auto& d : h.dx)
    EXPECT_TRUE(std::all_of(d.begin(), d.end(), [](float v) { return v == 7.0f; })) << "a null dx was written";
}

TEST_P(NewOpsCpu, GradientsMatchFiniteDifferences) {
  const auto& [op, layout] = GetParam();
  constexpr std::int64_t n = 2;
  OpHarness h(op.graph(), "op", n, 7);
  h.cpu.layout = layout;
  h.bind();
  h.forward();
  h.backward();
  const std::vector<std::vector<float>> dx = h.dx, grads = h.grads;
  constexpr float eps = 1e-2f;
  auto check = [&](float* v, float analytic, const std::string& what) {
    const double numeric = h.numeric_grad(v, eps);
    EXPECT_NEAR(analytic, numeric, 2e-3 + 2e-3 * std::fabs(numeric)) << what;
  };
  for (std::size_t i = 0; i < h.x.size(); ++i)
    for (std::size_t k = 0; k < h.x[i].size(); k += 7) check(&h.x[i][k], dx[i][k], "dx" + std::to_string(i) + "[" + std::to_string(k) + "]");
  for (std::size_t p = 0; p < h.params.size(); ++p)
    for (std::size_t k = 0; k < h.params[p].size(); ++k)
      check(&h.params[p][k], grads[p][k], "dparam" + std::to_string(p) + "[" + std::to_string(k) + "]");
}

INSTANTIATE_TEST_SUITE_P(Ops, NewOpsCpu, ::testing::Combine(::testing::ValuesIn(cases()),
                                                            ::testing::Values(Layout::nchw, Layout::nhwc)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" +
                                  (std::get<1>(info.param) == Layout::nhwc ? "nhwc" : "nchw");
                         });

}  // namespace
}  // namespace kiln::test
