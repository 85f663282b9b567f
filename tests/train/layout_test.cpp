// The CPU backend in NHWC trains like the CPU backend in NCHW: the same losses step by step
// and the same weights after, dropout included (its mask is drawn by the element's logical
// index, not its place in memory), for models that between them use every op. This is what
// makes the CPU the oracle of an NHWC GPU run. Per-op checks of both layouts: BackendOps.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/kiln.hpp"
#include "test_models.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

// A grouped, strided, dilated conv with bias, average pooling in ceil mode, global pools.
Graph conv_variety() {
  GraphBuilder b("variety", Shape::chw(3, 32, 32), 10);
  b.add(layers::conv(6, 3).pad(2).dilation(2).bias(true).named("c1"))
      .add(layers::batchnorm().named("bn1"))
      .add(layers::gelu())
      .add(layers::conv(6, 3).stride(2).pad(1).groups(3).bias(true).named("c2"))
      .add(layers::avgpool(3).stride(2).pad(1).ceil(true).named("ap"))
      .add(layers::dropout(0.3).named("d1"))
      .add(layers::global_maxpool().named("gm"))
      .add(layers::global_avgpool().from({"ap"}).named("ga"))
      .add(layers::concat({"gm", "ga"}).named("cat"))
      .add(layers::flatten())
      .add(layers::batchnorm().named("bn2"))
      .add(layers::linear(10).named("fc"));
  return b.build();
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct Run {
  std::vector<double> losses;
  SafetensorsFile weights;
};

Run train(const Graph& g, Layout layout, std::int64_t steps, const std::string& out) {
  Cifar10 data = make_synthetic_cifar10({steps * 16, 16, 11});
  TrainConfig c;
  c.batch = 16;
  c.epochs = 1;
  c.lr = 0.02;
  c.momentum = 0.9;
  c.weight_decay = 5e-4;
  c.augment = Augment{0, 2, true};
  c.seed = 5;
  RunOptions run;
  run.threads = 2;
  run.layout = layout;
  run.evaluate = EvalPolicy::never;
  Trainer t(g, c, run);
  Run r;
  t.on_step([&](const StepEvent& e) { r.losses.push_back(e.loss); });
  EXPECT_EQ(t.fit(data).steps, steps);
  t.save_weights(out);
  r.weights = read_safetensors(out);
  return r;
}

void expect_same_training(const Graph& g, std::int64_t steps, double tolerance) {
  // Files of this test's own: ctest runs the CpuLayouts tests at once, in one temporary folder.
  const std::string dir = ::testing::TempDir() + "/" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
  const Run nchw = train(g, Layout::nchw, steps, dir + "_layout_nchw.safetensors");
  const Run nhwc = train(g, Layout::nhwc, steps, dir + "_layout_nhwc.safetensors");
  ASSERT_EQ(nchw.losses.size(), static_cast<std::size_t>(steps));
  ASSERT_EQ(nhwc.losses.size(), nchw.losses.size());
  for (std::size_t i = 0; i < nchw.losses.size(); ++i)
    EXPECT_NEAR(nhwc.losses[i], nchw.losses[i], tolerance * std::max(1.0, std::fabs(nchw.losses[i]))) << "step " << i + 1;
  ASSERT_EQ(nhwc.weights.tensors.size(), nchw.weights.tensors.size());
  for (const NamedTensor& t : nchw.weights.tensors) {
    const NamedTensor* other = nhwc.weights.find(t.name);
    ASSERT_NE(other, nullptr) << t.name;
    ASSERT_EQ(other->f32.size(), t.f32.size()) << t.name;
    double worst = 0;
    for (std::size_t i = 0; i < t.f32.size(); ++i)
      worst = std::max(worst, std::fabs(static_cast<double>(other->f32[i]) - t.f32[i]) / std::max(1.0, std::fabs(static_cast<double>(t.f32[i]))));
    EXPECT_LE(worst, tolerance) << t.name << " differs between the NCHW and the NHWC run";
  }
}

// Float rounding apart (an accumulated conv dx sums its taps before adding), the two runs
// are the same run: a dropout mask drawn by memory position would differ at the first step.
constexpr double kTolerance = 1e-5;

TEST(CpuLayouts, DropoutBatchnormPoolFlatten) { expect_same_training(dropout_bn_net(), 4, kTolerance); }
TEST(CpuLayouts, ResidualAddConcatAndAProbe) { expect_same_training(probe_model(true), 4, kTolerance); }
TEST(CpuLayouts, GroupedStridedDilatedConvGlobalPools) { expect_same_training(conv_variety(), 4, kTolerance); }
TEST(CpuLayouts, EveryOpSpec) {
  // The fuzz corpus's spec with every op, at CIFAR's size.
  std::string yaml = read_text(std::string(KILN_SOURCE_DIR) + "/tests/fuzz/corpus/spec/every_op.yaml");
  const std::size_t at = yaml.find("input: [3, 16, 16]");
  ASSERT_NE(at, std::string::npos);
  yaml.replace(at, 18, "input: [3, 32, 32]");
  expect_same_training(parse_spec(yaml, "every_op.yaml").graph, 4, kTolerance);
}
TEST(CpuLayouts, CifarQuick) {
  expect_same_training(load_spec(std::string(KILN_SOURCE_DIR) + "/data/models/cifar_quick.yaml").graph, 3, kTolerance);
}

}  // namespace
}  // namespace kiln::test
