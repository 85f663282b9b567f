// The memory plan against the schedule a backend runs: every read and write of a buffer
// happens on a step where the plan says the buffer is live, every gradient is written
// (overwriting, not adding) before anything adds to or reads it, and buffers live at the
// same step never share bytes. The overlap check alone passed a plan whose lifetimes were
// wrong (a gradient zero-filled before its planned start: the unused-branch bug).
#include <fmt/format.h>

#include <map>

#include "graph/op_def.hpp"
#include "test_models.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

struct Access {
  int step;
  int buffer;
  enum Kind { read, write, add } kind;
  std::string what;
};

// The accesses of one training step, as both backends make them: forward of layer i at
// step i, the loss at n, the backward of layer i at 2n - i (skipped without a gradient).
std::vector<Access> schedule(const Graph& g, const MemoryPlan& plan, Layout layout) {
  auto layers = g.layers();
  const int n = static_cast<int>(layers.size());
  std::vector<Access> out;
  auto act = [&](int i) { return plan.activation[static_cast<std::size_t>(i)]; };
  auto grad = [&](int i) { return plan.gradient[static_cast<std::size_t>(i)]; };
  for (const Layer& layer : layers) {
    bool view = layer.op == OpKind::flatten && flatten_is_view(g, layer, layout);
    if (layer.index == 0) {
      out.push_back({0, act(0), Access::write, "stage input"});
      continue;
    }
    if (view) continue;
    for (int in : layer.inputs) out.push_back({layer.index, act(in), Access::read, "forward of " + layer.name});
    out.push_back({layer.index, act(layer.index), Access::write, "forward of " + layer.name});
  }
  out.push_back({n, act(n - 1), Access::read, "loss"});
  if (plan.mode == PlanMode::eval) return out;
  out.push_back({n, grad(n - 1), Access::write, "loss"});
  for (int i = n - 1; i >= 1; --i) {
    const Layer& layer = layers[static_cast<std::size_t>(i)];
    if (grad(i) < 0) continue;
    if (layer.op == OpKind::flatten && flatten_is_view(g, layer, layout)) continue;
    const int step = 2 * n - i;
    const std::string what = "backward of " + layer.name;
    auto needs = detail::op_def(layer.op).backward_needs(layer);
    out.push_back({step, grad(i), Access::read, what});
    if (needs.output) out.push_back({step, act(i), Access::read, what});
    for (std::size_t slot = 0; slot < layer.inputs.size(); ++slot) {
      int in = layer.inputs[slot];
      if (needs.input) out.push_back({step, act(in), Access::read, what});
      if (grad(in) >= 0)
        out.push_back({step, grad(in), plan.accumulate[static_cast<std::size_t>(i)][slot] ? Access::add : Access::write, what});
    }
  }
  return out;
}

void expect_schedule_fits(const Graph& g, const MemoryPlan& plan, Layout layout) {
  // Live ranges hold every access.
  std::map<int, bool> written;  // gradient buffer -> written this step
  for (const Access& a : schedule(g, plan, layout)) {
    ASSERT_GE(a.buffer, 0) << a.what;
    const Buffer& b = plan.buffers[static_cast<std::size_t>(a.buffer)];
    EXPECT_TRUE(b.first <= a.step && a.step <= b.last)
        << a.what << " touches the buffer of layer '" << g.layers()[static_cast<std::size_t>(b.layer)].name << "' at step "
        << a.step << " but it is live on [" << b.first << ", " << b.last << "]";
    if (b.kind != Buffer::Kind::gradient) continue;
    bool& w = written[a.buffer];
    if (a.kind == Access::write) {
      EXPECT_FALSE(w) << a.what << " overwrites a gradient another backward wrote";
    } else {
      EXPECT_TRUE(w) << a.what << (a.kind == Access::add ? " adds to" : " reads") << " a gradient nothing wrote";
    }
    w = true;
  }
  // Buffers live at the same step share no bytes.
  for (std::size_t i = 0; i < plan.buffers.size(); ++i)
    for (std::size_t j = i + 1; j < plan.buffers.size(); ++j) {
      const Buffer& a = plan.buffers[i];
      const Buffer& b = plan.buffers[j];
      bool together = !(a.last < b.first || b.last < a.first);
      bool shared = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
      EXPECT_FALSE(together && shared) << "buffers of layers " << a.layer << " and " << b.layer;
    }
}

TEST(MemorySchedule, ShippedModelsInBothLayouts) {
  for (const char* model : {"cifar_quick.yaml", "resnet20.yaml", "airbench.yaml"}) {
    Graph g = load_spec(repo_path(std::string("data/models/") + model)).graph;
    for (Layout layout : {Layout::nchw, Layout::nhwc})
      for (PlanMode mode : {PlanMode::train, PlanMode::eval}) {
        SCOPED_TRACE(fmt::format("{} {} {}", model, to_string(layout), mode == PlanMode::train ? "train" : "eval"));
        expect_schedule_fits(g, plan_memory(g, 32, DType::f32, mode, layout), layout);
      }
  }
}

TEST(MemorySchedule, UnusedBranchRunsForwardOnly) {
  Graph g = probe_model(true, 16);
  for (Layout layout : {Layout::nchw, Layout::nhwc}) {
    MemoryPlan plan = plan_memory(g, 32, DType::f32, PlanMode::train, layout);
    expect_schedule_fits(g, plan, layout);
    for (const char* name : {"probe", "probe_bn", "probe_relu"}) {
      const Layer* layer = g.find(name);
      EXPECT_GE(plan.activation[static_cast<std::size_t>(layer->index)], 0) << name;  // its forward runs
      EXPECT_EQ(plan.gradient[static_cast<std::size_t>(layer->index)], -1) << name;   // its backward does not
    }
    // relu1's gradient comes from conv2 and the add alone; the probe adds nothing.
    const Layer* relu1 = g.find("relu1");
    EXPECT_GE(plan.gradient[static_cast<std::size_t>(relu1->index)], 0);
  }
  // The parameters that train are those of the model without the probe.
  EXPECT_EQ(plan_memory(g, 32).grad_bytes, plan_memory(probe_model(false, 16), 32).grad_bytes);
}

TEST(MemorySchedule, ChainsOfUnusedLayersAndBranchesAtEveryPoint) {
  // A dead branch off every layer of a small model, one at a time, and a dead chain.
  for (const char* from : {"conv1", "bn1", "relu1", "res", "cat", "pool", "flatten"}) {
    GraphBuilder b("dead", Shape::chw(3, 8, 8), 10);
    b.add(layers::conv(4, 3).pad(1).named("conv1")).add(layers::batchnorm().named("bn1")).add(layers::relu().named("relu1"));
    b.add(layers::conv(4, 3).pad(1).from({"relu1"}).named("conv2")).add(layers::add({"conv2", "relu1"}).named("res"));
    b.add(layers::concat({"res", "relu1"}).named("cat")).add(layers::maxpool(2).named("pool"));
    b.add(layers::flatten().named("flatten"));
    const bool flat = std::string(from) == "flatten";
    b.add((flat ? layers::linear(5) : layers::conv(2, 1)).from({from}).named("dead1")).add(layers::relu().named("dead2"));
    b.add(layers::linear(10).from({"flatten"}).named("fc"));
    Graph g = b.build();
    for (Layout layout : {Layout::nchw, Layout::nhwc}) {
      SCOPED_TRACE(fmt::format("dead branch from {}, {}", from, to_string(layout)));
      MemoryPlan plan = plan_memory(g, 4, DType::f32, PlanMode::train, layout);
      expect_schedule_fits(g, plan, layout);
      EXPECT_EQ(plan.gradient[static_cast<std::size_t>(g.find("dead1")->index)], -1);
    }
  }
}

}  // namespace
}  // namespace kiln::test
