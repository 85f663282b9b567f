// The element-wise ops' contract beyond their values (those are in BackendOps,
// tests/ops/backend_ops_elementwise_test.cpp): declared backward needs, in-place runs, the
// dropout key, flatten as a view; and Dims4's index math.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numbers>

#include "math/dropout.hpp"
#include "math/layout.hpp"
#include "math/rng.hpp"
#include "op_harness.hpp"

namespace kiln::test {
namespace {

Graph one_op_graph(LayerDef op, Shape input = Shape::chw(2, 5, 6)) {
  GraphBuilder b("t", input, 10);
  b.add(op.named("op")).add(layers::flatten()).add(layers::linear(10));
  return b.build();
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

// Each op's declared needs agree with what its CPU backward reads (BackendOps poisons the other).
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

TEST(OpsElementwise, DropoutInPlaceMatchesSeparate) {
  OpHarness h(one_op_graph(layers::dropout(0.25)), "op", 2);
  h.cpu.dropout_key = 5;
  h.forward(true);
  const std::vector<float> y = h.y;
  h.cpu.y = h.x[0].data();
  h.forward(true);
  EXPECT_EQ(h.x[0], y);
}

// ---- flatten ------------------------------------------------------------------------------

TEST(OpsElementwise, FlattenAsAView) {
  OpHarness h(one_op_graph(layers::flatten(), Shape::chw(3, 4, 5)), "op", 2);
  ASSERT_EQ(h.layer().shape, Shape::vec(60));
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
