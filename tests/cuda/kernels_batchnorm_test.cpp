// kiln's batchnorm and bias CUDA kernels (cuda/kernels/batchnorm.cu, bias.cu) against the
// CPU batchnorm layer and a direct host bias, NCHW and NHWC. Tolerances,
// |gpu - cpu| <= atol + rtol*|cpu|: batchnorm y, dx, dweight, dbias 1e-4/1e-4 (sums in
// double in another order, then float arithmetic that may be fused); running and saved
// statistics 1e-5/1e-5; bias forward exact (one float add), dbias 1e-5/1e-5.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "kernels_test_util.hpp"

namespace kiln::test {
namespace {

using cuda::Dims4;

enum : std::size_t { kWeight, kBias, kMean, kVar };

// A batchnorm ("bn") on a 1x1 conv's C x 4 x 4 output, or on a linear's C features.
Graph bn_graph(Shape input, LayerDef bn) {
  GraphBuilder b("t", Shape::chw(3, 4, 4), 10);
  if (input.is_vector())
    b.add(layers::flatten()).add(layers::linear(input.c));
  else
    b.add(layers::conv(input.c, 1));
  b.add(bn.named("bn")).add(layers::flatten()).add(layers::linear(10));
  return b.build();
}

// One training (or evaluation) forward and backward of the layer in `h` on the GPU against
// the CPU: y, running statistics, saved statistics, then dx over NaN, accumulated and null,
// with the parameter gradients each time.
void check_bn(OpHarness& h, bool train, bool nhwc) {
  SCOPED_TRACE(std::string(train ? "train " : "eval ") + layout_name(nhwc) + ", " + h.layer().shape.str() + ", n " +
               std::to_string(h.cpu.n));
  const std::int64_t n = h.cpu.n;
  const Shape& s = h.layer().shape;
  const Dims4 d = dims_of(s, n, nhwc);
  const auto c = static_cast<std::size_t>(s.c);
  const Attrs& a = h.layer().attrs;
  const float momentum = static_cast<float>(a.momentum), eps = static_cast<float>(a.eps);
  const bool weight_trained = h.cpu.grads[kWeight] != nullptr, bias_trained = h.cpu.grads[kBias] != nullptr;

  DeviceBuffer<float> weight(h.params[kWeight]), bias(h.params[kBias]), running_mean(h.params[kMean]),
      running_var(h.params[kVar]);
  DeviceBuffer<float> x(to_layout(h.x[0], d)), y(std::vector<float>(h.y.size(), kNaN));
  DeviceBuffer<float> save_mean(std::vector<float>(c, kNaN)), save_invstd(std::vector<float>(c, kNaN));

  h.forward(train);  // updates the CPU's running statistics, keeps mean and invstd in state
  cuda::batchnorm_forward(DType::f32, train, x.get(), d, y.get(), weight.get(), bias.get(), running_mean.get(), running_var.get(),
                          save_mean.get(), save_invstd.get(), momentum, eps, nullptr);
  expect_near(h.y, from_layout(y.download(), d), 1e-4, 1e-4, "y", &d);
  expect_near(h.params[kMean], running_mean.download(), 1e-5, 1e-5, "running_mean");
  expect_near(h.params[kVar], running_var.download(), 1e-5, 1e-5, "running_var");
  const std::vector<float> cpu_mean(h.state.begin(), h.state.begin() + s.c), cpu_invstd(h.state.begin() + s.c, h.state.end());
  expect_near(cpu_mean, save_mean.download(), 1e-5, 1e-5, "save_mean");
  expect_near(cpu_invstd, save_invstd.download(), 1e-5, 1e-5, "save_invstd");

  // Backward, on the GPU's own saved statistics and running statistics.
  DeviceBuffer<float> dy(to_layout(h.dy, d)), dweight(std::vector<float>(c, kNaN)), dbias(std::vector<float>(c, kNaN));
  auto run = [&](float* dx, bool accumulate) {
    cuda::batchnorm_backward(DType::f32, train, x.get(), dy.get(), d, dx, accumulate, weight.get(), weight_trained ? dweight.get() : nullptr,
                             bias_trained ? dbias.get() : nullptr, save_mean.get(), save_invstd.get(), running_mean.get(),
                             running_var.get(), eps, nullptr);
  };
  auto expect_param_grads = [&](const char* when) {
    if (weight_trained) expect_near(h.grads[kWeight], dweight.download(), 1e-4, 1e-4, std::string("dweight ") + when);
    if (bias_trained) expect_near(h.grads[kBias], dbias.download(), 1e-4, 1e-4, std::string("dbias ") + when);
  };
  check_dx(h, d, 1e-4, 1e-4, run);  // ends with dx null: the parameter gradients must still come
  expect_param_grads("(dx null)");
  dweight.upload(std::vector<float>(c, kNaN));
  dbias.upload(std::vector<float>(c, kNaN));
  run(nullptr, false);
  expect_param_grads("(dx null, from NaN)");
  h.bind();
}

TEST(CudaBatchnorm, TrainMatchesCpu) {
  KILN_REQUIRE_GPU();
  for (bool nhwc : {false, true}) {
    OpHarness h(bn_graph(Shape::chw(5, 4, 4), layers::batchnorm()), "bn", 4);
    for (float& v : h.x[0]) v = 3.0f * v + 2.0f;  // a mean far from 0 tests the two-pass variance
    h.bind();
    check_bn(h, true, nhwc);
  }
}

// n*h*w = 4*81 = 324 > 256 threads: every thread of the block sums more than one value.
TEST(CudaBatchnorm, MoreValuesThanThreads) {
  KILN_REQUIRE_GPU();
  for (bool nhwc : {false, true}) {
    GraphBuilder b("t", Shape::chw(3, 9, 9), 10);
    b.add(layers::conv(6, 1)).add(layers::batchnorm().momentum(0.3).named("bn")).add(layers::flatten()).add(layers::linear(10));
    OpHarness h(b.build(), "bn", 4);
    check_bn(h, true, nhwc);
    check_bn(h, false, nhwc);
  }
}

TEST(CudaBatchnorm, EvalUsesRunningStatistics) {
  KILN_REQUIRE_GPU();
  for (bool nhwc : {false, true}) {
    OpHarness h(bn_graph(Shape::chw(5, 4, 4), layers::batchnorm().eps(1e-3)), "bn", 3);
    check_bn(h, false, nhwc);
  }
}

// weight: false (fixed at 1, no gradient), with and without a trained bias.
TEST(CudaBatchnorm, FixedWeightAndBias) {
  KILN_REQUIRE_GPU();
  for (bool bias : {true, false})
    for (bool nhwc : {false, true}) {
      OpHarness h(bn_graph(Shape::chw(3, 4, 4), layers::batchnorm().weight(false).bias(bias)), "bn", 2);
      ASSERT_EQ(h.cpu.grads[kWeight], nullptr);
      ASSERT_EQ(h.cpu.grads[kBias] == nullptr, !bias);
      check_bn(h, true, nhwc);
    }
}

// BatchNorm1d on features, and the one-value case (n = 1): variance 0, and the running
// variance takes the biased 0 instead of dividing by zero, as the CPU does.
TEST(CudaBatchnorm, VectorsAndASingleValue) {
  KILN_REQUIRE_GPU();
  for (std::int64_t n : {5, 1}) {
    OpHarness h(bn_graph(Shape::vec(6), layers::batchnorm()), "bn", n);
    check_bn(h, true, false);
    check_bn(h, false, true);
  }
}

// 70,000 channels: more than the 65,535 blocks launched, so blocks loop over channels.
TEST(CudaBatchnorm, MoreChannelsThanBlocks) {
  KILN_REQUIRE_GPU();
  OpHarness h(bn_graph(Shape::vec(70000), layers::batchnorm()), "bn", 3);
  check_bn(h, true, false);
}

// ---- bias -------------------------------------------------------------------------------

void check_bias(const Dims4& nchw_dims, bool nhwc) {
  Dims4 d = nchw_dims;
  d.nhwc = nhwc;
  SCOPED_TRACE("bias on " + std::to_string(d.n) + "x" + std::to_string(d.c) + "x" + std::to_string(d.h) + "x" +
               std::to_string(d.w) + " " + layout_name(nhwc));
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  auto random = [&](std::int64_t count) {
    std::vector<float> v(static_cast<std::size_t>(count));
    for (float& e : v) e = normal(rng);
    return v;
  };
  const std::vector<float> y0 = random(d.count()), b = random(d.c), dy = random(d.count());
  std::vector<float> want_y(y0.size());
  std::vector<double> sums(static_cast<std::size_t>(d.c), 0.0);
  const std::int64_t hw = d.h * d.w;
  for (std::size_t i = 0; i < y0.size(); ++i) {  // NCHW order
    const auto c = static_cast<std::size_t>((static_cast<std::int64_t>(i) / hw) % d.c);
    want_y[i] = y0[i] + b[c];
    sums[c] += dy[i];
  }
  const std::vector<float> want_db(sums.begin(), sums.end());

  DeviceBuffer<float> y(to_layout(y0, d)), bias(b), ddy(to_layout(dy, d)), db(std::vector<float>(b.size(), kNaN));
  cuda::bias_forward(DType::f32, y.get(), bias.get(), d, nullptr);
  expect_near(want_y, from_layout(y.download(), d), 0.0, 0.0, "y", &d);
  cuda::bias_backward(DType::f32, ddy.get(), d, db.get(), nullptr);
  expect_near(want_db, db.download(), 1e-5, 1e-5, "dbias");
}

TEST(CudaBias, ForwardAndBackward) {
  KILN_REQUIRE_GPU();
  for (bool nhwc : {false, true}) {
    check_bias({3, 5, 4, 6, false}, nhwc);    // conv output
    check_bias({7, 10, 1, 1, false}, nhwc);   // linear output
    check_bias({2, 3, 20, 20, false}, nhwc);  // 800 values per channel > 256 threads
  }
  check_bias({2, 70000, 1, 1, false}, false);  // more channels than blocks
}

}  // namespace
}  // namespace kiln::test
