// The memory plan covers all of a run's memory: parameter-shaped blocks with every
// parameter aligned, activations, per-layer state, one workspace, staging — one allocation
// whose blocks do not overlap, and the CPU backend binds exactly that.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "backend/executor.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

void expect_blocks_tile_the_allocation(const MemoryPlan& plan) {
  std::int64_t at = 0;
  for (const MemoryBlock& b : plan.blocks) {
    EXPECT_EQ(b.offset, at) << b.name;
    EXPECT_EQ(b.offset % MemoryPlan::alignment, 0) << b.name;
    EXPECT_EQ(b.bytes % MemoryPlan::alignment, 0) << b.name;
    at = b.offset + b.bytes;
  }
  EXPECT_EQ(at, plan.total_bytes);
}

TEST(MemoryBlocks, EveryParameterStartsAligned) {
  // conv1's bias has 3 floats (12 bytes): packed end to end, conv2's weight would start 12
  // bytes after conv1's 81-float weight — misaligned for cuDNN's vector loads.
  GraphBuilder b("align", Shape::chw(3, 8, 8), 10);
  b.add(layers::conv(3, 3).pad(1).named("conv1")).add(layers::conv(5, 3).pad(1).named("conv2"));
  b.add(layers::batchnorm().named("bn")).add(layers::flatten()).add(layers::linear(10).named("fc"));
  Graph g = b.build();
  MemoryPlan plan = plan_memory(g, 4);
  ASSERT_EQ(plan.param_offsets.size(), g.params().size());
  std::int64_t end = 0;
  for (std::size_t i = 0; i < g.params().size(); ++i) {
    EXPECT_EQ(plan.param_offsets[i] % MemoryPlan::alignment, 0) << g.params()[i].name;
    EXPECT_GE(plan.param_offsets[i], end) << g.params()[i].name << " overlaps the parameter before it";
    end = plan.param_offsets[i] + g.params()[i].elements * 4;
  }
  EXPECT_GE(plan.param_block_bytes, end);
  EXPECT_EQ(plan.param_offsets[1], 512);  // conv1.bias after conv1.weight's 324 bytes, aligned
  EXPECT_EQ(plan.param_offsets[2], 768);  // conv2.weight after the 12-byte bias
}

TEST(MemoryBlocks, TrainingAndEvaluationBlocks) {
  Graph g = load_spec(repo_path("data/models/resnet20.yaml")).graph;
  MemoryPlan train = plan_memory(g, 16);
  std::vector<std::string> names;
  for (const MemoryBlock& b : train.blocks) names.push_back(b.name);
  EXPECT_EQ(names, (std::vector<std::string>{"parameters", "gradients", "momentum", "averages", "activations"}));
  expect_blocks_tile_the_allocation(train);
  EXPECT_EQ(train.block("activations")->bytes, train.arena_bytes);
  EXPECT_EQ(train.block("momentum")->bytes, train.param_block_bytes);
  MemoryPlan eval = plan_memory(g, 16, DType::f32, PlanMode::eval);
  ASSERT_EQ(eval.blocks.size(), 2u);
  expect_blocks_tile_the_allocation(eval);
}

TEST(MemoryBlocks, CpuTargetAddsStateWorkspaceAndStaging) {
  Graph g = load_spec(repo_path("data/models/resnet20.yaml")).graph;
  MemoryPlan plan = plan_memory(g, 16);
  MemoryPlan run = plan_memory(g, Target{Backend::cpu, 16});
  expect_blocks_tile_the_allocation(run);
  ASSERT_NE(run.block("state"), nullptr);
  ASSERT_NE(run.block("workspace"), nullptr);
  ASSERT_NE(run.block("staging"), nullptr);
  EXPECT_EQ(run.block("staging")->bytes, 256);  // 16 int32 labels
  EXPECT_GT(run.block("workspace")->bytes, 0);  // im2col for the 3x3 convolutions
  // Batchnorm keeps its batch statistics from forward to backward; a conv keeps nothing.
  EXPECT_GE(run.state_offsets[static_cast<std::size_t>(g.find("bn1")->index)], 0);
  EXPECT_EQ(run.state_offsets[static_cast<std::size_t>(g.find("conv1")->index)], -1);
  EXPECT_EQ(run.total_bytes, plan.total_bytes + run.block("state")->bytes + run.block("workspace")->bytes + 256);
  // The CUDA backend sizes its own state, workspace and staging on the device.
  MemoryPlan cuda = plan_memory(g, Target{Backend::cuda, 16, DType::f32, Layout::nhwc});
  EXPECT_EQ(cuda.total_bytes, plan_memory(g, 16, DType::f32, PlanMode::train, Layout::nhwc).total_bytes);
}

TEST(MemoryBlocks, TheCpuBackendBindsThePlanOfItsTarget) {
  for (const char* model : {"cifar_quick.yaml", "resnet20.yaml", "airbench.yaml"}) {
    Graph g = load_spec(repo_path(std::string("data/models/") + model)).graph;
    auto executor = detail::make_cpu_executor(g, 24, 1);
    MemoryPlan run = plan_memory(g, Target{Backend::cpu, 24});
    EXPECT_EQ(executor->memory().total_bytes, run.total_bytes) << model;
    EXPECT_EQ(executor->memory().param_offsets, run.param_offsets) << model;
  }
}

// What `kiln check MODEL --json ARGS` says a run allocates.
std::int64_t check_total(const std::string& model, const std::string& args) {
  std::string command = std::string("'") + KILN_BIN + "' check '" + repo_path(model) + "' --json " + args + " 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  std::string out;
  char chunk[4096];
  while (std::size_t got = std::fread(chunk, 1, sizeof chunk, pipe.get())) out.append(chunk, got);
  return nlohmann::json::parse(out)["memory"]["total_bytes"].get<std::int64_t>();
}

TEST(MemoryBlocks, KilnCheckPrintsWhatTheCpuRunAllocates) {
  for (const char* model : {"data/models/cifar_quick.yaml", "data/models/resnet20.yaml"}) {
    Graph g = load_spec(repo_path(model)).graph;
    auto executor = detail::make_cpu_executor(g, 24, 1);
    EXPECT_EQ(check_total(model, "--batch 24"), executor->memory().total_bytes) << model;
    // The layout counts: NHWC reorders at the flatten (its own buffers), a different figure.
    EXPECT_EQ(check_total(model, "--batch 24 --target cuda --layout nhwc"),
              plan_memory(g, Target{Backend::cuda, 24, DType::f32, Layout::nhwc}).total_bytes)
        << model;
  }
}

}  // namespace
}  // namespace kiln::test
