// The shipped models: shapes, parameter counts and FLOPs computed by hand, and the C++
// builder giving the same graph as the spec.
#include "test_util.hpp"

namespace kiln::test {
namespace {

TEST(Models, CifarQuick) {
  Spec s = load_spec(repo_path("data/models/cifar_quick.yaml"));
  const Graph& g = s.graph;
  EXPECT_TRUE(g.warnings().empty());
  EXPECT_EQ(g.find("conv1")->shape, Shape::chw(32, 32, 32));
  EXPECT_EQ(g.find("pool1")->shape, Shape::chw(32, 16, 16));  // ceil((32-3)/2)+1 = 16, as Caffe
  EXPECT_EQ(g.find("pool2")->shape, Shape::chw(32, 8, 8));
  EXPECT_EQ(g.find("pool3")->shape, Shape::chw(64, 4, 4));
  EXPECT_EQ(g.find("flatten")->shape, Shape::vec(1024));
  // Caffe's cifar10_quick: 145,578 parameters.
  EXPECT_EQ(g.parameter_count(), (3 * 32 * 25 + 32) + (32 * 32 * 25 + 32) + (32 * 64 * 25 + 64) + (1024 * 64 + 64) + (64 * 10 + 10));
  EXPECT_EQ(g.parameter_count(), 145578);
  EXPECT_EQ(g.find("conv1")->flops, 2LL * 32 * 32 * 32 * 3 * 25);
  EXPECT_EQ(g.find("pool1")->flops, 32LL * 16 * 16 * 9);
  EXPECT_EQ(g.find("ip1")->flops, 2LL * 1024 * 64);
  EXPECT_EQ(g.flops(), 24830208);
  EXPECT_EQ(s.train.batch, 128);
  ASSERT_EQ(g.params().size(), 10u);
  EXPECT_EQ(g.params()[0].name, "conv1.weight");
  EXPECT_EQ(g.params()[0].dims, (std::vector<std::int64_t>{32, 3, 5, 5}));
  EXPECT_EQ(g.params()[6].name, "ip1.weight");
  EXPECT_EQ(g.params()[6].dims, (std::vector<std::int64_t>{64, 1024}));
}

TEST(Models, ResNet20) {
  Spec s = load_spec(repo_path("data/models/resnet20.yaml"));
  const Graph& g = s.graph;
  EXPECT_TRUE(g.warnings().empty());
  EXPECT_EQ(g.find("s1b3_add")->shape, Shape::chw(16, 32, 32));
  EXPECT_EQ(g.find("s2b1_add")->shape, Shape::chw(32, 16, 16));
  EXPECT_EQ(g.find("s3b3_relu")->shape, Shape::chw(64, 8, 8));
  EXPECT_EQ(g.find("pool")->shape, Shape::chw(64, 1, 1));
  // conv1+bn1, stage 1 (3 x two 16->16 convs + 2 bn), stage 2 and 3 with a projection in
  // their first block, fc.
  std::int64_t stage1 = 3 * (2 * 16 * 16 * 9 + 2 * 2 * 16);
  std::int64_t stage2 = (16 * 32 * 9 + 32 * 32 * 9 + 2 * 2 * 32 + 16 * 32 + 2 * 32) + 2 * (2 * 32 * 32 * 9 + 2 * 2 * 32);
  std::int64_t stage3 = (32 * 64 * 9 + 64 * 64 * 9 + 2 * 2 * 64 + 32 * 64 + 2 * 64) + 2 * (2 * 64 * 64 * 9 + 2 * 2 * 64);
  EXPECT_EQ(g.parameter_count(), 3 * 16 * 9 + 2 * 16 + stage1 + stage2 + stage3 + 64 * 10 + 10);
  EXPECT_EQ(g.parameter_count(), 272474);
  // Batchnorm: weight and bias are parameters, the running statistics buffers.
  const Layer* bn = g.find("bn1");
  ASSERT_EQ(bn->params.size(), 4u);
  EXPECT_EQ(g.params()[static_cast<std::size_t>(bn->params[2])].name, "bn1.running_mean");
  EXPECT_TRUE(g.params()[static_cast<std::size_t>(bn->params[2])].buffer);
  // Residual adds read the block input twice.
  EXPECT_EQ(g.find("relu1")->consumers.size(), 2u);
  // About 41 M multiply-adds, as the paper's 0.27M-parameter net.
  EXPECT_GT(g.flops(), 80'000'000);
  EXPECT_LT(g.flops(), 84'000'000);
}

TEST(Models, Airbench) {
  Spec s = load_spec(repo_path("data/models/airbench.yaml"));
  const Graph& g = s.graph;
  EXPECT_EQ(g.find("whiten")->shape, Shape::chw(24, 31, 31));
  EXPECT_EQ(g.find("g1_pool")->shape, Shape::chw(64, 15, 15));
  EXPECT_EQ(g.find("g2_pool")->shape, Shape::chw(256, 7, 7));
  EXPECT_EQ(g.find("g3_pool")->shape, Shape::chw(256, 3, 3));
  EXPECT_EQ(g.find("pool")->shape, Shape::chw(256, 1, 1));
  const Layer* bn = g.find("g1_bn1");
  EXPECT_FALSE(bn->attrs.weight);
  EXPECT_DOUBLE_EQ(bn->attrs.eps, 1e-12);
  EXPECT_DOUBLE_EQ(bn->attrs.momentum, 0.4);
  EXPECT_FALSE(g.params()[static_cast<std::size_t>(bn->params[0])].trainable);  // scale fixed at 1
  EXPECT_TRUE(g.params()[static_cast<std::size_t>(bn->params[1])].trainable);
  EXPECT_DOUBLE_EQ(g.find("logits")->attrs.factor, 1.0 / 9.0);
  EXPECT_FALSE(g.find("head")->attrs.bias);
  EXPECT_EQ(g.find("g1_conv1")->attrs.pad, Padding::all(1));
  std::int64_t convs = 24 * 64 * 9 + 64 * 64 * 9 + 64 * 256 * 9 + 3 * 256 * 256 * 9;
  EXPECT_EQ(g.parameter_count(), (3 * 24 * 4 + 24) + convs + 2 * 2 * (64 + 256 + 256) + 256 * 10);
  EXPECT_EQ(s.train.batch, 1024);
}

TEST(Builder, SameGraphAsTheSpec) {
  GraphBuilder b("cifar_quick", Shape::chw(3, 32, 32), 10);
  b.add(layers::conv(32, 5).pad(2).named("conv1"))
      .add(layers::maxpool(3).stride(2).ceil().named("pool1"))
      .add(layers::relu().named("relu1"))
      .add(layers::conv(32, 5).pad(2).named("conv2"))
      .add(layers::relu().named("relu2"))
      .add(layers::avgpool(3).stride(2).ceil().named("pool2"))
      .add(layers::conv(64, 5).pad(2).named("conv3"))
      .add(layers::relu().named("relu3"))
      .add(layers::avgpool(3).stride(2).ceil().named("pool3"))
      .add(layers::flatten().named("flatten"))
      .add(layers::linear(64).named("ip1"))
      .add(layers::linear(10).named("ip2"));
  Graph built = b.build();
  Graph loaded = load_spec(repo_path("data/models/cifar_quick.yaml")).graph;
  ASSERT_EQ(built.layers().size(), loaded.layers().size());
  for (std::size_t i = 0; i < built.layers().size(); ++i) {
    EXPECT_EQ(built.layers()[i].name, loaded.layers()[i].name);
    EXPECT_EQ(built.layers()[i].shape, loaded.layers()[i].shape) << built.layers()[i].name;
    EXPECT_EQ(built.layers()[i].flops, loaded.layers()[i].flops);
  }
  EXPECT_EQ(built.parameter_count(), loaded.parameter_count());
  EXPECT_TRUE(built.source().empty());
}

TEST(Builder, ErrorsHaveNoFileButNameTheLayer) {
  GraphBuilder b("bad", Shape::chw(3, 32, 32), 10);
  b.add(layers::conv(8, 3).in(1).named("gray")).add(layers::flatten()).add(layers::linear(10));
  try {
    b.build();
    FAIL();
  } catch (const GraphError& e) {
    ASSERT_EQ(e.diagnostics().size(), 1u);
    EXPECT_EQ(e.diagnostics()[0].format(),
              "error: layer 'gray' (conv 3x3): declares in: 1 channel, but its input 'input' has 3 channels (3x32x32)\n"
              "    hint: set in: 3, or remove 'in' to infer it\n");
    EXPECT_EQ(e.exit_code(), ExitCode::invalid_input);
  }
}

TEST(Builder, ResidualWithFromAndFrozen) {
  GraphBuilder b("res", Shape::chw(3, 8, 8), 4);
  b.add(layers::conv(8, 3).pad(1).named("stem"))
      .add(layers::conv(8, 3).pad(1).named("branch").frozen())
      .add(layers::add({"branch", "stem"}).named("sum"))
      .add(layers::global_avgpool())
      .add(layers::flatten())
      .add(layers::linear(4).lr_scale(0.5));
  Graph g = b.build();
  EXPECT_EQ(g.find("sum")->inputs, (std::vector<int>{2, 1}));
  for (int p : g.find("branch")->params) EXPECT_FALSE(g.params()[static_cast<std::size_t>(p)].trainable);
  EXPECT_DOUBLE_EQ(g.output().attrs.lr_scale, 0.5);
  EXPECT_EQ(g.output().name, "linear6");
}

TEST(OpNames, RoundTrip) {
  for (auto name : op_names()) {
    auto op = op_from_name(name);
    ASSERT_TRUE(op.has_value()) << name;
    EXPECT_EQ(op_name(*op), name);
  }
  EXPECT_FALSE(op_from_name("input").has_value());
  EXPECT_EQ(op_names().size(), 21u);
}

}  // namespace
}  // namespace kiln::test
