// batchnorm's running statistics over two steps (one step's values, train and eval, fixed and
// frozen parameters and finite differences are in BackendOps,
// tests/ops/backend_ops_batchnorm_test.cpp), and math/batchnorm.hpp's helpers.
#include <gtest/gtest.h>

#include "math/batchnorm.hpp"
#include "op_harness.hpp"

namespace kiln::test {
namespace {

enum : std::size_t { kWeight, kBias, kMean, kVar };

Graph bn_graph(Shape input, LayerDef bn) {
  GraphBuilder b("t", Shape::chw(3, 4, 4), 10);
  if (input.is_vector())
    b.add(layers::flatten()).add(layers::linear(input.c));
  else
    b.add(layers::conv(input.c, 1));  // C x 4 x 4
  b.add(bn.named("bn")).add(layers::flatten()).add(layers::linear(10));
  return b.build();
}

TEST(OpsBatchnorm, RunningStatisticsAfterTwoSteps) {
  OpHarness h(bn_graph(Shape::chw(4, 4, 4), layers::batchnorm().momentum(0.3)), "bn", 3);
  std::vector<double> mean(h.params[kMean].begin(), h.params[kMean].end());
  std::vector<double> var(h.params[kVar].begin(), h.params[kVar].end());
  const std::int64_t m = 3 * 16;
  for (int step = 0; step < 2; ++step) {
    h.x[0] = h.random(static_cast<std::int64_t>(h.x[0].size()));
    for (float& v : h.x[0]) v = 2.0f * v + static_cast<float>(step + 1);  // mean ~ step + 1, var ~ 4
    h.bind();
    for (std::size_t c = 0; c < 4; ++c) {
      double s = 0, sq = 0;
      for (std::int64_t i = 0; i < 3; ++i)
        for (std::int64_t j = 0; j < 16; ++j) s += h.x[0][static_cast<std::size_t>((i * 4 + static_cast<std::int64_t>(c)) * 16 + j)];
      const double mu = s / m;
      for (std::int64_t i = 0; i < 3; ++i)
        for (std::int64_t j = 0; j < 16; ++j) {
          const double d = h.x[0][static_cast<std::size_t>((i * 4 + static_cast<std::int64_t>(c)) * 16 + j)] - mu;
          sq += d * d;
        }
      mean[c] = 0.7 * mean[c] + 0.3 * mu;
      var[c] = 0.7 * var[c] + 0.3 * sq / (m - 1);
    }
    h.forward(true);
  }
  expect_close(mean, h.params[kMean], 1e-6, 1e-6, "running_mean");
  expect_close(var, h.params[kVar], 1e-6, 1e-6, "running_var");
  EXPECT_DOUBLE_EQ(math::bn_unbiased(2.0, 5), 2.5);
  EXPECT_DOUBLE_EQ(math::bn_running(1.0, 3.0, 0.25), 1.5);
}

}  // namespace
}  // namespace kiln::test
