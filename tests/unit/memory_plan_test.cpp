// The memory planner: reuse happens, and no two tensors live at the same step share bytes.
#include "graph/memory_blocks.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

void expect_no_live_overlap(const MemoryPlan& plan) {
  for (std::size_t i = 0; i < plan.buffers.size(); ++i) {
    const Buffer& a = plan.buffers[i];
    EXPECT_EQ(a.offset % MemoryPlan::alignment, 0);
    EXPECT_LE(a.offset + a.bytes, plan.arena_bytes);
    EXPECT_LE(a.first, a.last);
    for (std::size_t j = i + 1; j < plan.buffers.size(); ++j) {
      const Buffer& b = plan.buffers[j];
      bool live_together = !(a.last < b.first || b.last < a.first);
      bool share_bytes = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
      EXPECT_FALSE(live_together && share_bytes) << "buffers " << i << " (layer " << a.layer << ") and " << j << " (layer "
                                                 << b.layer << ") overlap";
    }
  }
}

class ShippedModel : public ::testing::TestWithParam<const char*> {};

TEST_P(ShippedModel, TrainingPlanReusesMemoryWithoutOverlap) {
  Graph g = load_spec(repo_path(std::string("data/models/") + GetParam())).graph;
  MemoryPlan plan = plan_memory(g, 128, DType::f32, PlanMode::train);
  expect_no_live_overlap(plan);
  EXPECT_LT(plan.arena_bytes, plan.activation_sum);  // reuse happened
  EXPECT_GE(plan.arena_bytes, plan.live_peak);       // placement can't beat the live peak
  // Every layer has an activation; every layer after the input a gradient (all models
  // start with a trainable conv).
  for (const Layer& layer : g.layers()) {
    EXPECT_GE(plan.activation[static_cast<std::size_t>(layer.index)], 0);
    if (layer.index > 0) {
      EXPECT_GE(plan.gradient[static_cast<std::size_t>(layer.index)], 0) << layer.name;
    }
  }
  EXPECT_EQ(plan.gradient[0], -1);  // no gradient for the model input
}

TEST_P(ShippedModel, EvalPlanIsSmaller) {
  Graph g = load_spec(repo_path(std::string("data/models/") + GetParam())).graph;
  MemoryPlan train = plan_memory(g, 64, DType::f32, PlanMode::train);
  MemoryPlan eval = plan_memory(g, 64, DType::f32, PlanMode::eval);
  expect_no_live_overlap(eval);
  EXPECT_LT(eval.arena_bytes, train.arena_bytes);
  EXPECT_EQ(eval.grad_bytes, 0);
  for (int grad : eval.gradient) EXPECT_EQ(grad, -1);
}

INSTANTIATE_TEST_SUITE_P(Models, ShippedModel, ::testing::Values("cifar_quick.yaml", "resnet20.yaml", "airbench.yaml"));

TEST(MemoryPlan, SizesFollowBatchAndDtype) {
  Graph g = load_spec(repo_path("data/models/cifar_quick.yaml")).graph;
  MemoryPlan plan = plan_memory(g, 100, DType::bf16);
  const Buffer& conv1 = plan.buffers[static_cast<std::size_t>(plan.activation[1])];
  EXPECT_EQ(conv1.bytes, 100 * 32 * 32 * 32 * 2);
  EXPECT_EQ(plan.param_bytes, 145578 * 4);  // parameters stay fp32
  EXPECT_EQ(plan.grad_bytes, 145578 * 4);
}

TEST(MemoryPlan, FlattenIsAView) {
  Graph g = load_spec(repo_path("data/models/cifar_quick.yaml")).graph;
  MemoryPlan plan = plan_memory(g, 8);
  int flatten = g.find("flatten")->index, pool3 = g.find("pool3")->index;
  EXPECT_EQ(plan.activation[static_cast<std::size_t>(flatten)], plan.activation[static_cast<std::size_t>(pool3)]);
  EXPECT_EQ(plan.gradient[static_cast<std::size_t>(flatten)], plan.gradient[static_cast<std::size_t>(pool3)]);
}

TEST(MemoryPlan, NhwcFlattenOfAFeatureMapIsNotAView) {
  Graph quick = load_spec(repo_path("data/models/cifar_quick.yaml")).graph;
  MemoryPlan plan = plan_memory(quick, 8, DType::f32, PlanMode::train, Layout::nhwc);
  expect_no_live_overlap(plan);
  auto at = [&](const char* name) { return static_cast<std::size_t>(quick.find(name)->index); };
  EXPECT_NE(plan.activation[at("flatten")], plan.activation[at("pool3")]);
  EXPECT_NE(plan.gradient[at("flatten")], plan.gradient[at("pool3")]);
  EXPECT_FALSE(flatten_is_view(quick, *quick.find("flatten"), Layout::nhwc));
  // After global pooling the map is 1x1: both layouts agree, still a view.
  Graph resnet = load_spec(repo_path("data/models/resnet20.yaml")).graph;
  MemoryPlan rplan = plan_memory(resnet, 8, DType::f32, PlanMode::train, Layout::nhwc);
  auto rat = [&](const char* name) { return static_cast<std::size_t>(resnet.find(name)->index); };
  EXPECT_EQ(rplan.activation[rat("flatten")], rplan.activation[rat("pool")]);
  EXPECT_TRUE(flatten_is_view(resnet, *resnet.find("flatten"), Layout::nhwc));
}

TEST(MemoryPlan, LifetimesFollowWhatBackwardReads) {
  Graph g = load_spec(repo_path("data/models/cifar_quick.yaml")).graph;
  MemoryPlan plan = plan_memory(g, 8);
  const int n = static_cast<int>(g.layers().size());
  auto act = [&](const char* name) { return plan.buffers[static_cast<std::size_t>(plan.activation[static_cast<std::size_t>(g.find(name)->index)])]; };
  auto bwd = [&](const char* name) { return 2 * n - g.find(name)->index; };
  // conv2 reads its input (relu1's output) for its weight gradient; relu1 reads its own output.
  EXPECT_EQ(act("relu1").last, bwd("relu1"));
  EXPECT_GE(act("relu1").last, bwd("conv2"));
  // avgpool needs neither input nor output in backward, so relu2's output (read by pool2's
  // forward and relu2's backward) dies at relu2's backward, and pool2's output lives until
  // conv3's backward.
  EXPECT_EQ(act("pool2").last, bwd("conv3"));
  // The logits are read by the loss at step n.
  EXPECT_EQ(act("ip2").last, n);
}

TEST(MemoryPlan, GradientsOfATensorReadTwiceAccumulate) {
  Graph g = load_spec(repo_path("data/models/resnet20.yaml")).graph;
  MemoryPlan plan = plan_memory(g, 4);
  const Layer& relu1 = *g.find("relu1");
  ASSERT_EQ(relu1.consumers.size(), 2u);
  int writes = 0, adds = 0;
  for (int c : relu1.consumers) {
    const Layer& consumer = g.layers()[static_cast<std::size_t>(c)];
    for (std::size_t slot = 0; slot < consumer.inputs.size(); ++slot) {
      if (consumer.inputs[slot] != relu1.index) continue;
      ++writes;
      if (plan.accumulate[static_cast<std::size_t>(c)][slot]) ++adds;
    }
  }
  EXPECT_EQ(writes, 2);
  EXPECT_EQ(adds, 1);  // the later layer's backward writes first, the other adds
  // The add runs after the branch, so its backward writes relu1's gradient first.
  const Layer& add = *g.find("s1b1_add");
  EXPECT_FALSE(plan.accumulate[static_cast<std::size_t>(add.index)][1]);
}

TEST(MemoryPlan, FrozenStemNeedsNoGradientBeforeIt) {
  GraphBuilder b("frozen", Shape::chw(3, 8, 8), 2);
  b.add(layers::conv(4, 3).pad(1).frozen().named("stem")).add(layers::relu().named("r")).add(layers::flatten())
      .add(layers::linear(2).named("fc"));
  Graph g = b.build();
  MemoryPlan plan = plan_memory(g, 2);
  EXPECT_EQ(plan.gradient[static_cast<std::size_t>(g.find("stem")->index)], -1);
  EXPECT_EQ(plan.gradient[static_cast<std::size_t>(g.find("r")->index)], -1);
  EXPECT_GE(plan.gradient[static_cast<std::size_t>(g.find("fc")->index)], 0);
  expect_no_live_overlap(plan);
}

// A layer a backend runs in another's slots (the CUDA backend's batchnorm + activation):
// its output is live from the batchnorm's forward and its gradient until the batchnorm's
// backward, so nothing live in between (here a branch ordered between the two) shares its bytes.
TEST(MemoryPlan, ALayerRunInAnothersSlotsIsLiveThere) {
  GraphBuilder b("apart", Shape::chw(3, 8, 8), 10);
  b.add(layers::conv(4, 3).pad(1).named("c0"))
      .add(layers::batchnorm().named("bn"))
      .add(layers::conv(4, 3).pad(1).named("side").from({"c0"}))  // between bn and its activation
      .add(layers::relu().named("side_act"))
      .add(layers::gelu().named("act").from({"bn"}))
      .add(layers::add({"act", "side_act"}).named("sum"))
      .add(layers::global_avgpool())
      .add(layers::flatten())
      .add(layers::linear(10));
  Graph g = b.build();
  const int bn = g.find("bn")->index, act = g.find("act")->index;
  ASSERT_GT(act, bn + 1);
  const int n = static_cast<int>(g.layers().size());
  const detail::RunsAt runs_at[] = {{.layer = act, .at = bn}};
  MemoryPlan fused = detail::plan_memory(g, 16, DType::f32, PlanMode::train, Layout::nchw, runs_at);
  expect_no_live_overlap(fused);
  const Buffer& y = fused.buffers[static_cast<std::size_t>(fused.activation[static_cast<std::size_t>(act)])];
  const Buffer& dy = fused.buffers[static_cast<std::size_t>(fused.gradient[static_cast<std::size_t>(act)])];
  EXPECT_EQ(y.first, bn);
  EXPECT_EQ(dy.last, 2 * n - bn);
  MemoryPlan plain = plan_memory(g, 16, DType::f32, PlanMode::train);
  EXPECT_EQ(plain.buffers[static_cast<std::size_t>(plain.activation[static_cast<std::size_t>(act)])].first, act);
  EXPECT_EQ(plain.buffers[static_cast<std::size_t>(plain.gradient[static_cast<std::size_t>(act)])].last, 2 * n - act);
}

TEST(MemoryPlan, BadBatchAndOverflow) {
  Graph g = load_spec(repo_path("data/models/cifar_quick.yaml")).graph;
  EXPECT_THROW(plan_memory(g, 0), UsageError);
  EXPECT_THROW(plan_memory(g, std::int64_t{1} << 60), GraphError);
}

}  // namespace
}  // namespace kiln::test
