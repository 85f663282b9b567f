// CPU activations, dropout, scale and flatten against direct double-precision references
// (PyTorch's definitions) and finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numbers>

#include "math/dropout.hpp"
#include "math/layout.hpp"
#include "math/rng.hpp"
#include "op_harness.hpp"

namespace kiln::test {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// op_harness's expect_close lets a NaN through (a NaN error never exceeds the bound), and
// these tests poison unused buffers with NaN: require NaN exactly where the reference has it.
void expect_matches(const std::vector<double>& ref, const float* got, double atol, double rtol, const std::string& what) {
  for (std::size_t i = 0; i < ref.size(); ++i)
    if (std::isnan(got[i]) != std::isnan(ref[i])) {
      ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", reference " << ref[i];
      return;
    }
  expect_close(ref, got, atol, rtol, what);
}

Graph one_op_graph(LayerDef op, Shape input = Shape::chw(2, 5, 6)) {
  GraphBuilder b("t", input, 10);
  b.add(op.named("op")).add(layers::flatten()).add(layers::linear(10));
  return b.build();
}

std::vector<double> widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// Backward must overwrite dx (even when it holds NaN), add into it with accumulate, and
// leave it alone when it is null.
void expect_grad_paths(OpHarness& h, const std::vector<double>& ref, double atol, double rtol) {
  h.bind();
  std::fill(h.dx[0].begin(), h.dx[0].end(), kNaN);
  h.backward();
  expect_matches(ref, h.dx[0].data(), atol, rtol, "dx");

  std::vector<float> before = h.random(static_cast<std::int64_t>(h.dx[0].size()));
  std::copy(before.begin(), before.end(), h.dx[0].begin());
  h.cpu.accumulate[0] = true;
  h.backward();
  // What a float += of the reference gives (exact where the gradient is a copy).
  std::vector<double> sum(ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) sum[i] = before[i] + static_cast<float>(ref[i]);
  expect_matches(sum, h.dx[0].data(), atol, rtol, "accumulated dx");

  h.bind();
  std::fill(h.dx[0].begin(), h.dx[0].end(), 7.0f);
  h.cpu.dx[0] = nullptr;
  h.backward();
  EXPECT_TRUE(std::all_of(h.dx[0].begin(), h.dx[0].end(), [](float v) { return v == 7.0f; })) << "null dx was written";
  h.bind();
}

// ---- activations ---------------------------------------------------------------------------

struct Activation {
  const char* name;
  LayerDef def;
  bool keeps_output;  // backward reads y (else x), as the op's backward_needs says
  std::function<double(double)> f, df;
};

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double phi(double x) { return 0.5 * (1 + std::erf(x / std::sqrt(2.0))); }

std::vector<Activation> activations() {
  const double pdf = 1 / std::sqrt(2 * std::numbers::pi);
  return {
      {"relu", layers::relu(), true, [](double x) { return x > 0 ? x : 0; }, [](double x) { return x > 0 ? 1.0 : 0.0; }},
      {"leaky_relu", layers::leaky_relu(0.2), false, [](double x) { return x > 0 ? x : 0.2 * x; },
       [](double x) { return x > 0 ? 1.0 : 0.2; }},
      {"gelu", layers::gelu(), false, [](double x) { return x * phi(x); },
       [pdf](double x) { return phi(x) + x * pdf * std::exp(-x * x / 2); }},
      {"silu", layers::silu(), false, [](double x) { return x * sigmoid(x); },
       [](double x) { return sigmoid(x) * (1 + x * (1 - sigmoid(x))); }},
      {"sigmoid", layers::sigmoid(), true, sigmoid, [](double x) { return sigmoid(x) * (1 - sigmoid(x)); }},
      {"tanh", layers::tanh(), true, [](double x) { return std::tanh(x); },
       [](double x) { return 1 - std::tanh(x) * std::tanh(x); }},
  };
}

// index_of inverts Dims4::at in both layouts (the CUDA kernels map a thread's element to
// its n, c, h, w with it).
TEST(Layout, IndexOfInvertsAt) {
  for (bool nhwc : {false, true}) {
    const math::Dims4 d{2, 3, 4, 5, nhwc};
    std::int64_t visited = 0;
    for (std::int64_t n = 0; n < d.n; ++n)
      for (std::int64_t c = 0; c < d.c; ++c)
        for (std::int64_t h = 0; h < d.h; ++h)
          for (std::int64_t w = 0; w < d.w; ++w, ++visited) {
            const math::Index4 x = math::index_of(d, d.at(n, c, h, w));
            ASSERT_TRUE(x.n == n && x.c == c && x.h == h && x.w == w) << "nhwc " << nhwc << " at " << n << c << h << w;
            EXPECT_EQ(d.channel_of(d.at(n, c, h, w)), c);
          }
    EXPECT_EQ(visited, d.count());
  }
}

TEST(OpsElementwise, ActivationsMatchReference) {
  for (const Activation& a : activations()) {
    SCOPED_TRACE(a.name);
    OpHarness h(one_op_graph(a.def), "op", 3);
    for (std::size_t i = 0; i < h.x[0].size(); i += 5) h.x[0][i] *= 4.0f;  // reach the tails
    h.x[0][0] = 0.0f;
    std::vector<double> y, dx;
    for (std::size_t i = 0; i < h.x[0].size(); ++i) {
      y.push_back(a.f(h.x[0][i]));
      dx.push_back(a.df(h.x[0][i]) * h.dy[i]);
    }
    h.forward();
    // Float expf/erff/tanhf are within a few ulp; sigmoid and tanh backward compute 1 - y
    // from a rounded y, which costs ~1e-7 absolute near saturation.
    expect_matches(y, h.y.data(), 1e-6, 1e-5, "y");
    // Backward may read only what backward_needs keeps.
    std::fill((a.keeps_output ? h.x[0] : h.y).begin(), (a.keeps_output ? h.x[0] : h.y).end(), kNaN);
    expect_grad_paths(h, dx, 1e-6, 1e-5);
  }
}

// Each op's declared needs agree with what its CPU backward reads (checked above).
TEST(OpsElementwise, ActivationNeedsMatchTheirBackward) {
  for (const Activation& a : activations()) {
    Graph g = one_op_graph(a.def);
    const detail::BackwardNeeds needs = detail::op_def(g.find("op")->op).backward_needs(*g.find("op"));
    EXPECT_EQ(needs.output, a.keeps_output) << a.name;
    EXPECT_EQ(needs.input, !a.keeps_output) << a.name;
  }
}

TEST(OpsElementwise, ActivationsInPlace) {
  for (const Activation& a : activations()) {
    OpHarness h(one_op_graph(a.def), "op", 2);
    OpHarness separate(one_op_graph(a.def), "op", 2);
    separate.forward();
    h.cpu.y = h.x[0].data();
    h.forward();
    EXPECT_EQ(h.x[0], separate.y) << a.name;
  }
}

TEST(OpsElementwise, ActivationFiniteDifferences) {
  for (const Activation& a : activations()) {
    SCOPED_TRACE(a.name);
    OpHarness h(one_op_graph(a.def), "op", 2);
    h.forward();
    h.backward();
    const std::vector<float> dx = h.dx[0];
    for (std::size_t e = 0; e < dx.size(); e += 5) {
      if (std::fabs(h.x[0][e]) < 0.05f) continue;  // relu's and leaky_relu's kink
      const double fd = h.numeric_grad(&h.x[0][e], 1e-2f);
      EXPECT_NEAR(dx[e], fd, 1e-3 + 1e-3 * std::fabs(fd)) << "element " << e << ", x = " << h.x[0][e];
    }
  }
}

// ---- dropout -------------------------------------------------------------------------------

TEST(OpsElementwise, DropoutTrainMatchesReference) {
  const double p = 0.3;
  OpHarness h(one_op_graph(layers::dropout(p), Shape::chw(3, 16, 16)), "op", 2);
  h.cpu.dropout_key = math::stream_key(42, math::kStreamDropout, 1);
  std::vector<double> y, dx;
  std::int64_t kept = 0;
  for (std::size_t i = 0; i < h.x[0].size(); ++i) {
    const bool keep = math::random_uniform(h.cpu.dropout_key, i) >= static_cast<float>(p);
    kept += keep;
    y.push_back(keep ? h.x[0][i] / (1 - p) : 0.0);
    dx.push_back(keep ? h.dy[i] / (1 - p) : 0.0);
  }
  const double fraction = static_cast<double>(kept) / static_cast<double>(h.x[0].size());
  EXPECT_NEAR(fraction, 1 - p, 0.05);  // 1536 draws: 5 standard deviations is 0.059
  h.forward(true);
  expect_matches(y, h.y.data(), 0.0, 1e-6, "y");
  std::fill(h.x[0].begin(), h.x[0].end(), kNaN);  // the mask is regenerated, nothing kept
  std::fill(h.y.begin(), h.y.end(), kNaN);
  expect_grad_paths(h, dx, 1e-6, 1e-6);  // atol: the accumulated sum may cancel
}

TEST(OpsElementwise, DropoutMaskFollowsTheKey) {
  OpHarness h(one_op_graph(layers::dropout(0.5)), "op", 2);
  std::fill(h.x[0].begin(), h.x[0].end(), 1.0f);
  std::vector<float> masks[3];
  const std::uint64_t keys[3] = {math::stream_key(1, math::kStreamDropout, 3), math::stream_key(1, math::kStreamDropout, 3),
                                 math::stream_key(2, math::kStreamDropout, 3)};
  for (int k = 0; k < 3; ++k) {
    h.cpu.dropout_key = keys[k];
    h.cpu.threads = k == 1 ? 4 : 1;
    h.forward(true);
    masks[k] = h.y;
    for (float v : h.y) EXPECT_TRUE(v == 0.0f || v == 2.0f) << v;
  }
  EXPECT_EQ(masks[0], masks[1]);
  EXPECT_NE(masks[0], masks[2]);
  EXPECT_EQ(math::dropout_multiplier(keys[0], 0, 0.0f, 1.0f), 1.0f);
}

TEST(OpsElementwise, DropoutEvalAndZeroAreIdentity) {
  for (double p : {0.5, 0.0})
    for (bool train : {false, true}) {
      if (p > 0 && train) continue;
      SCOPED_TRACE(testing::Message() << "p " << p << (train ? ", train" : ", eval"));
      OpHarness h(one_op_graph(layers::dropout(p)), "op", 2);
      h.cpu.dropout_key = 99;
      h.forward(train);
      EXPECT_EQ(h.y, h.x[0]);
      expect_grad_paths(h, widen(h.dy), 0.0, 0.0);
      h.cpu.y = h.x[0].data();  // in place
      const std::vector<float> x = h.x[0];
      h.forward(train);
      EXPECT_EQ(h.x[0], x);
    }
}

TEST(OpsElementwise, DropoutInPlaceMatchesSeparate) {
  OpHarness h(one_op_graph(layers::dropout(0.25)), "op", 2);
  h.cpu.dropout_key = 5;
  h.forward(true);
  const std::vector<float> y = h.y;
  h.cpu.y = h.x[0].data();
  h.forward(true);
  EXPECT_EQ(h.x[0], y);
}

// ---- scale and flatten ---------------------------------------------------------------------

TEST(OpsElementwise, ScaleMatchesReference) {
  OpHarness h(one_op_graph(layers::scale(1.0 / 9)), "op", 3);
  std::vector<double> y, dx;
  for (std::size_t i = 0; i < h.x[0].size(); ++i) y.push_back(h.x[0][i] / 9.0), dx.push_back(h.dy[i] / 9.0);
  const double fd = h.numeric_grad(&h.x[0][4], 1e-2f);
  EXPECT_NEAR(fd, h.dy[4] / 9.0, 1e-4);
  h.forward();
  expect_matches(y, h.y.data(), 0.0, 1e-6, "y");  // fp32 factor: 2 roundings
  std::fill(h.x[0].begin(), h.x[0].end(), kNaN);
  std::fill(h.y.begin(), h.y.end(), kNaN);
  expect_grad_paths(h, dx, 1e-6, 1e-6);  // atol: the accumulated sum may cancel
}

TEST(OpsElementwise, FlattenCopiesOnlyBetweenSeparateBuffers) {
  OpHarness h(one_op_graph(layers::flatten(), Shape::chw(3, 4, 5)), "op", 2);
  ASSERT_EQ(h.layer().shape, Shape::vec(60));
  h.forward();
  EXPECT_EQ(h.y, h.x[0]);
  expect_grad_paths(h, widen(h.dy), 0.0, 0.0);

  // The executor's view: same memory in and out, for values and for gradients.
  const std::vector<float> x = h.x[0], dy = h.dy;
  h.cpu.y = h.x[0].data();
  h.forward();
  EXPECT_EQ(h.x[0], x);
  h.cpu.dx[0] = h.dy.data();
  h.cpu.accumulate[0] = true;
  h.backward();
  EXPECT_EQ(h.dy, dy);
}

}  // namespace
}  // namespace kiln::test
