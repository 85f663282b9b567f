// CPU batchnorm against a direct double-precision reference of PyTorch's BatchNorm2d /
// BatchNorm1d (batch statistics and running-stat updates in training, running statistics in
// evaluation) and against finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "math/batchnorm.hpp"
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

struct Ref {
  std::vector<double> y, dx, dweight, dbias, running_mean, running_var;
};

// PyTorch's batch_norm in double: y = (x - mean) / sqrt(var + eps) * weight + bias over
// the n * H * W values of each channel; in training the biased variance normalizes and the
// unbiased one goes into running_var.
Ref bn_ref(const OpHarness& h, bool train) {
  const Shape& s = h.layer().shape;
  const Attrs& a = h.layer().attrs;
  const std::int64_t n = h.cpu.n, C = s.c, S = s.h * s.w, m = n * S;
  const std::vector<float>& x = h.x[0];
  Ref r{std::vector<double>(x.size()), std::vector<double>(x.size()), {}, {}, {}, {}};
  auto at = [&](std::int64_t i, std::int64_t c, std::int64_t j) { return static_cast<std::size_t>((i * C + c) * S + j); };
  for (std::int64_t c = 0; c < C; ++c) {
    const auto cc = static_cast<std::size_t>(c);
    double mean = h.params[kMean][cc], var = h.params[kVar][cc];
    double rm = mean, rv = var;
    if (train) {
      double sum = 0, sq = 0;
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < S; ++j) sum += x[at(i, c, j)];
      mean = sum / m;
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < S; ++j) sq += (x[at(i, c, j)] - mean) * (x[at(i, c, j)] - mean);
      var = sq / m;
      rm = (1 - a.momentum) * rm + a.momentum * mean;
      rv = (1 - a.momentum) * rv + a.momentum * var * m / (m - 1);
    }
    r.running_mean.push_back(rm);
    r.running_var.push_back(rv);
    const double invstd = 1 / std::sqrt(var + a.eps), w = h.params[kWeight][cc], b = h.params[kBias][cc];
    double sum_dy = 0, sum_dy_xhat = 0;
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < S; ++j) {
        const std::size_t e = at(i, c, j);
        const double xhat = (x[e] - mean) * invstd;
        r.y[e] = xhat * w + b;
        sum_dy += h.dy[e];
        sum_dy_xhat += h.dy[e] * xhat;
      }
    r.dweight.push_back(sum_dy_xhat);
    r.dbias.push_back(sum_dy);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < S; ++j) {
        const std::size_t e = at(i, c, j);
        const double xhat = (x[e] - mean) * invstd;
        r.dx[e] = train ? w * invstd * (h.dy[e] - sum_dy / m - xhat * sum_dy_xhat / m) : w * invstd * h.dy[e];
      }
  }
  return r;
}

// Forward and backward against the reference: y, running statistics, dx (overwritten over
// NaN, accumulated, and not written when null) and the parameter gradients.
void check(OpHarness& h, bool train) {
  const Ref r = bn_ref(h, train);
  const std::vector<float> mean_before = h.params[kMean], var_before = h.params[kVar];
  h.forward(train);
  expect_matches(r.y, h.y.data(), 1e-5, 1e-5, "y");
  expect_matches(r.running_mean, h.params[kMean].data(), 1e-6, 1e-6, "running_mean");
  expect_matches(r.running_var, h.params[kVar].data(), 1e-6, 1e-6, "running_var");
  if (!train) {
    EXPECT_EQ(h.params[kMean], mean_before);
    EXPECT_EQ(h.params[kVar], var_before);
  }

  std::fill(h.y.begin(), h.y.end(), kNaN);  // backward keeps x, not y
  std::fill(h.dx[0].begin(), h.dx[0].end(), kNaN);
  for (auto& g : h.grads) std::fill(g.begin(), g.end(), kNaN);
  h.backward();
  expect_matches(r.dx, h.dx[0].data(), 1e-5, 1e-4, "dx");
  for (std::size_t p : {kWeight, kBias}) {
    const std::vector<double>& want = p == kWeight ? r.dweight : r.dbias;
    if (h.cpu.grads[p])
      expect_matches(want, h.grads[p].data(), 1e-5, 1e-5, p == kWeight ? "dweight" : "dbias");
    else
      EXPECT_TRUE(std::all_of(h.grads[p].begin(), h.grads[p].end(), [](float v) { return std::isnan(v); }))
          << "a fixed parameter's gradient was written";
  }

  std::vector<float> before = h.random(static_cast<std::int64_t>(h.dx[0].size()));
  std::copy(before.begin(), before.end(), h.dx[0].begin());
  h.cpu.accumulate[0] = true;
  h.backward();
  std::vector<double> sum(r.dx.size());
  for (std::size_t i = 0; i < sum.size(); ++i) sum[i] = before[i] + static_cast<float>(r.dx[i]);
  expect_matches(sum, h.dx[0].data(), 1e-5, 1e-4, "accumulated dx");

  h.bind();
  std::fill(h.dx[0].begin(), h.dx[0].end(), 7.0f);
  for (auto& g : h.grads) std::fill(g.begin(), g.end(), kNaN);
  h.cpu.dx[0] = nullptr;
  h.backward();
  EXPECT_TRUE(std::all_of(h.dx[0].begin(), h.dx[0].end(), [](float v) { return v == 7.0f; })) << "null dx was written";
  if (h.cpu.grads[kBias]) expect_matches(r.dbias, h.grads[kBias].data(), 1e-5, 1e-5, "dbias without dx");
  h.bind();
}

TEST(OpsBatchnorm, TrainMatchesReference) {
  OpHarness h(bn_graph(Shape::chw(5, 4, 4), layers::batchnorm()), "bn", 4);
  check(h, true);
}

TEST(OpsBatchnorm, EvalUsesRunningStatistics) {
  OpHarness h(bn_graph(Shape::chw(5, 4, 4), layers::batchnorm().eps(1e-3)), "bn", 3);
  check(h, false);
}

// weight: false — the scale is a fixed parameter (no gradient) that still multiplies.
TEST(OpsBatchnorm, FixedWeightAndBias) {
  for (bool bias : {true, false}) {
    OpHarness h(bn_graph(Shape::chw(3, 4, 4), layers::batchnorm().weight(false).bias(bias)), "bn", 2);
    EXPECT_EQ(h.cpu.grads[kWeight], nullptr);
    EXPECT_EQ(h.cpu.grads[kBias] == nullptr, !bias);
    std::fill(h.params[kWeight].begin(), h.params[kWeight].end(), 1.0f);
    if (!bias) std::fill(h.params[kBias].begin(), h.params[kBias].end(), 0.0f);
    check(h, true);
    h.params[kWeight] = {1.5f, 0.5f, 2.0f};
    h.bind();
    check(h, true);
  }
}

TEST(OpsBatchnorm, VectorInputIsBatchNorm1d) {
  OpHarness h(bn_graph(Shape::vec(6), layers::batchnorm()), "bn", 5);
  ASSERT_EQ(h.layer().shape, Shape::vec(6));
  check(h, true);
  check(h, false);
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
  expect_matches(mean, h.params[kMean].data(), 1e-6, 1e-6, "running_mean");
  expect_matches(var, h.params[kVar].data(), 1e-6, 1e-6, "running_var");
  EXPECT_DOUBLE_EQ(math::bn_unbiased(2.0, 5), 2.5);
  EXPECT_DOUBLE_EQ(math::bn_running(1.0, 3.0, 0.25), 1.5);
}

// Central differences (eps 1e-2) for some inputs, and every weight and bias.
TEST(OpsBatchnorm, FiniteDifferences) {
  for (Shape s : {Shape::chw(3, 4, 4), Shape::vec(4)}) {
    SCOPED_TRACE(s.str());
    OpHarness h(bn_graph(s, layers::batchnorm()), "bn", 3);
    h.forward(true);
    h.backward();
    const std::vector<float> dx = h.dx[0];
    const std::vector<float> dw = h.grads[kWeight], db = h.grads[kBias];
    for (std::size_t e = 0; e < dx.size(); e += 7) {
      const double fd = h.numeric_grad(&h.x[0][e], 1e-2f);
      EXPECT_NEAR(dx[e], fd, 1e-3 + 1e-2 * std::fabs(fd)) << "x element " << e;
    }
    for (std::size_t c = 0; c < dw.size(); ++c) {
      const double fw = h.numeric_grad(&h.params[kWeight][c], 1e-2f), fb = h.numeric_grad(&h.params[kBias][c], 1e-2f);
      EXPECT_NEAR(dw[c], fw, 1e-3 + 1e-3 * std::fabs(fw)) << "weight " << c;
      EXPECT_NEAR(db[c], fb, 1e-3 + 1e-3 * std::fabs(fb)) << "bias " << c;
    }
  }
}

// Each channel is reduced by one thread in a fixed order: results are bitwise the same for
// any thread count (resumed training must match an uninterrupted run).
TEST(OpsBatchnorm, DeterministicAcrossThreadCounts) {
  std::vector<float> out[2][5];
  for (int t = 0; t < 2; ++t) {
    OpHarness h(bn_graph(Shape::chw(6, 4, 4), layers::batchnorm()), "bn", 4);
    h.cpu.threads = t == 0 ? 1 : 4;
    h.forward(true);
    h.backward();
    out[t][0] = h.y, out[t][1] = h.dx[0], out[t][2] = h.grads[kWeight], out[t][3] = h.grads[kBias];
    out[t][4] = h.params[kVar];
  }
  for (int k = 0; k < 5; ++k) EXPECT_EQ(out[0][k], out[1][k]) << k;
}

}  // namespace
}  // namespace kiln::test
