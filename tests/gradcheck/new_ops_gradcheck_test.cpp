// Backward through the CPU executor over a graph of groupnorm, mul and upsample: every
// parameter's gradient against central finite differences of the loss. The graph has the
// executor's accumulation paths for these ops: a squeeze-and-excitation gate whose gated
// input also feeds a later layer (its gradient is the sum of two consumers'), a mul of a
// layer by itself (both of its dx are one buffer), and an upsample before a groupnorm.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/executor.hpp"
#include "kiln/kiln.hpp"
#include "train/init.hpp"

namespace kiln::test {
namespace {

Graph se_net() {
  GraphBuilder b("se", Shape::chw(3, 6, 6), 5);
  b.add(layers::conv(4, 3).pad(1).named("stem"))
      .add(layers::groupnorm(2).named("gn0"))
      .add(layers::tanh().named("t0"))
      .add(layers::global_avgpool().named("squeeze"))
      .add(layers::flatten().named("sv"))
      .add(layers::linear(4).named("excite"))
      .add(layers::sigmoid().named("gate"))
      .add(layers::mul({"t0", "gate"}).named("se"))
      .add(layers::mul({"se", "se"}).named("square"))
      .add(layers::upsample(2).named("up"))
      .add(layers::conv(4, 3).pad(1).stride(2).named("c1"))
      .add(layers::add({"c1", "t0"}).named("sum"))
      .add(layers::groupnorm(4).named("gn1"))
      .add(layers::global_avgpool().named("m"))
      .add(layers::mul({"sum", "m"}).named("self_gate"))
      .add(layers::flatten())
      .add(layers::linear(5).named("fc"));
  return b.build();
}

TEST(GraphGradcheck, GroupnormSeGateAndUpsample) {
  constexpr std::int64_t n = 3;
  const Graph graph = se_net();
  auto ex = detail::make_cpu_executor(graph, n, 1);
  detail::init_params(*ex, 7);
  std::mt19937 rng(3);
  std::vector<std::uint8_t> images(static_cast<std::size_t>(n * graph.input_shape().elements())), labels;
  for (auto& p : images) p = static_cast<std::uint8_t>(rng() % 256);
  for (std::int64_t i = 0; i < n; ++i) labels.push_back(static_cast<std::uint8_t>(rng() % graph.classes()));
  detail::InputTransform transform;
  transform.mean.assign(3, 0.5f);
  transform.inv_std.assign(3, 4.0f);
  auto loss_value = [&](bool backward) {
    ex->stage({n, images.data(), labels.data(), nullptr}, transform);
    ex->forward(true, 11);
    ex->loss(detail::LossOptions{0.1f, false}, true, 0);
    if (backward) ex->backward(11);
    auto s = detail::total(ex->take_stats(true));
    return s.loss_sum / static_cast<double>(s.count);
  };

  loss_value(true);
  auto params = graph.params();
  int checked = 0;
  for (std::size_t p = 0; p < params.size(); ++p) {
    std::vector<float> grad(static_cast<std::size_t>(params[p].elements)), w(grad.size());
    ex->read_grad(p, grad);
    ex->read_param(p, w);
    for (std::size_t e = 0; e < grad.size(); e += std::max<std::size_t>(1, grad.size() / 5)) {
      const float eps = 2e-3f;
      const float saved = w[e];
      w[e] = saved + eps;
      ex->write_param(p, w);
      const double plus = loss_value(false);
      w[e] = saved - eps;
      ex->write_param(p, w);
      const double minus = loss_value(false);
      w[e] = saved;
      ex->write_param(p, w);
      const double numeric = (plus - minus) / (2.0 * eps);
      // fp32 forward: the difference quotient carries ~1e-7/eps of rounding noise.
      EXPECT_NEAR(grad[e], numeric, 2e-4 + 2e-2 * std::fabs(numeric)) << params[p].name << "[" << e << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 40);
}

}  // namespace
}  // namespace kiln::test
