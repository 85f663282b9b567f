// Backward over a whole graph: a small residual net with batchnorm, every parameter's
// gradient against central finite differences of the loss through the CPU executor.
// The net avoids relu: after batchnorm many inputs sit near its kink, and a difference
// quotient across the kink measures the step, not the slope (relu is checked by finite
// differences away from its kink in the op tests). Max pooling stays: its argmax does not
// move for perturbations this small.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/executor.hpp"
#include "kiln/kiln.hpp"
#include "train/init.hpp"

namespace kiln::test {
namespace {

struct Fixture {
  Graph graph;
  std::unique_ptr<detail::Executor> ex;
  std::vector<std::uint8_t> images, labels;
  detail::InputTransform transform;
  detail::LossOptions loss{0.1f, false};

  explicit Fixture(Graph g, std::int64_t n = 4) : graph(std::move(g)) {
    ex = detail::make_cpu_executor(graph, n, 1);
    detail::init_params(*ex, 7);
    std::mt19937 rng(3);
    images.resize(static_cast<std::size_t>(n * graph.input_shape().elements()));
    for (auto& p : images) p = static_cast<std::uint8_t>(rng() % 256);
    for (std::int64_t i = 0; i < n; ++i) labels.push_back(static_cast<std::uint8_t>(rng() % graph.classes()));
    transform.mean.assign(static_cast<std::size_t>(graph.input_shape().c), 0.5f);
    transform.inv_std.assign(static_cast<std::size_t>(graph.input_shape().c), 4.0f);
  }

  double loss_value(bool backward) {
    ex->stage({static_cast<std::int64_t>(labels.size()), images.data(), labels.data(), nullptr}, transform);
    ex->forward(true, 11);
    ex->loss(loss, true, 0);
    if (backward) ex->backward(11);
    auto s = detail::total(ex->take_stats(true));
    return s.loss_sum / static_cast<double>(s.count);
  }
};

Graph residual_net() {
  GraphBuilder b("res", Shape::chw(3, 8, 8), 5);
  b.add(layers::conv(4, 3).pad(1).named("stem"))
      .add(layers::batchnorm().named("bn0"))
      .add(layers::gelu().named("r0"))
      .add(layers::conv(4, 3).pad(1).bias(false).named("c1"))
      .add(layers::batchnorm().named("bn1"))
      .add(layers::gelu().named("g1"))
      .add(layers::conv(4, 3).pad(1).named("c2"))
      .add(layers::add({"c2", "r0"}).named("sum"))
      .add(layers::maxpool(2).named("pool"))
      .add(layers::conv(6, 1).named("wide"))
      .add(layers::concat({"wide", "pool"}).named("cat"))
      .add(layers::avgpool(2).named("avg"))
      .add(layers::flatten())
      .add(layers::linear(5).named("fc"))
      .add(layers::scale(0.5).named("s"));
  return b.build();
}

TEST(GraphGradcheck, ResidualNetWithBatchnorm) {
  Fixture f(residual_net());
  f.loss_value(true);
  auto params = f.graph.params();
  int checked = 0;
  for (std::size_t p = 0; p < params.size(); ++p) {
    if (!params[p].trainable) continue;
    std::vector<float> grad(static_cast<std::size_t>(params[p].elements)), w(grad.size());
    f.ex->read_grad(p, grad);
    f.ex->read_param(p, w);
    // A few elements of every parameter, spread over it.
    for (std::size_t e = 0; e < grad.size(); e += std::max<std::size_t>(1, grad.size() / 5)) {
      const float eps = 2e-3f;
      float saved = w[e];
      w[e] = saved + eps;
      f.ex->write_param(p, w);
      double plus = f.loss_value(false);
      w[e] = saved - eps;
      f.ex->write_param(p, w);
      double minus = f.loss_value(false);
      w[e] = saved;
      f.ex->write_param(p, w);
      double numeric = (plus - minus) / (2.0 * eps);
      // fp32 forward: the difference quotient carries ~1e-7/eps of rounding noise.
      EXPECT_NEAR(grad[e], numeric, 2e-4 + 2e-2 * std::fabs(numeric)) << params[p].name << "[" << e << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 40);
}

TEST(GraphGradcheck, FrozenLayersGetNoGradientAndDoNotMove) {
  GraphBuilder b("frozen", Shape::chw(3, 8, 8), 5);
  b.add(layers::conv(4, 3).pad(1).frozen().named("stem")).add(layers::relu()).add(layers::flatten()).add(layers::linear(5).named("fc"));
  Fixture f(b.build());
  std::vector<float> before(static_cast<std::size_t>(f.graph.params()[0].elements)), after(before.size());
  f.ex->read_param(0, before);
  f.loss_value(true);
  std::vector<math::SgdHyper> hyper(f.graph.params().size(), math::SgdHyper{0.1f, 0.9f, 0.01f, 0.0f, false});
  f.ex->update(hyper);
  f.ex->read_param(0, after);
  EXPECT_EQ(before, after);
  EXPECT_FALSE(f.graph.params()[0].trainable);
  EXPECT_TRUE(f.graph.params()[2].trainable);  // fc.weight
}

}  // namespace
}  // namespace kiln::test
