// The CUDA op table cannot be wrong silently: every op sits in its slot (a mis-slotted table
// is caught), `kiln check --target cuda` reports what a run runs, and a convolution cuDNN
// refuses is a build error (GraphError, exit 1) naming the layer and quoting cuDNN.
#include <gtest/gtest.h>

#include <array>
#include <stdexcept>
#include <string>

#include "cuda/conv_plan_cache.hpp"
#include "cuda/op_table.hpp"
#include "graph/op_def.hpp"
#include "kiln/kiln.hpp"

namespace kiln::test {
namespace {

constexpr std::size_t kOps = detail::kOpCount;

TEST(CudaOpTable, EveryOpInItsSlot) {
  for (std::size_t i = 0; i < kOps; ++i) {
    const auto kind = static_cast<OpKind>(i);
    const cuda::CudaOp& op = cuda::cuda_op(kind);
    EXPECT_EQ(op.kind, kind) << op_name(kind);
    EXPECT_TRUE(op.supports && op.compile && op.state_floats && op.forward && op.backward) << op_name(kind);
  }
  EXPECT_TRUE(cuda::cuda_op(OpKind::conv).prepare && cuda::cuda_op(OpKind::conv).bind);
  EXPECT_TRUE(cuda::cuda_op(OpKind::conv).krsc_weight_in_nhwc);
  EXPECT_FALSE(cuda::cuda_op(OpKind::linear).krsc_weight_in_nhwc);
}

TEST(CudaOpTable, AMisSlottedTableIsCaught) {
  std::array<const cuda::CudaOp*, kOps> table{};
  for (std::size_t i = 0; i < kOps; ++i) table[i] = &cuda::cuda_op(static_cast<OpKind>(i));
  EXPECT_NO_THROW(cuda::check_op_table(table.data(), table.size()));
  std::swap(table[2], table[3]);  // maxpool <-> avgpool
  try {
    cuda::check_op_table(table.data(), table.size());
    FAIL() << "a swapped table passed";
  } catch (const std::logic_error& e) {
    EXPECT_STREQ(e.what(), "CUDA op table: slot 2 ('maxpool') holds the entry of 'avgpool'");
  }
  std::swap(table[2], table[3]);
  table[5] = nullptr;
  try {
    cuda::check_op_table(table.data(), table.size());
    FAIL() << "a missing entry passed";
  } catch (const std::logic_error& e) {
    EXPECT_STREQ(e.what(), "CUDA op table: no entry for 'global_maxpool'");
  }
}

Graph pool_net() {
  GraphBuilder b("pools", Shape::chw(3, 8, 8), 10);
  b.add(layers::conv(4, 3).pad(1).named("c"))
      .add(layers::maxpool(2).named("floor"))
      .add(layers::avgpool(3).stride(2).ceil().named("ceil"))
      .add(layers::flatten().named("flat"))
      .add(layers::linear(10).named("fc"));
  return b.build();
}

// Pooling runs kiln's kernels in floor and ceil mode alike; check must say so, not describe
// a cuDNN resample that never runs.
TEST(CudaOpTable, CheckReportsWhatRuns) {
  Graph g = pool_net();
  CudnnReport nchw = compile_cudnn(g, Target{Backend::cuda, 4, DType::f32, Layout::nchw});
  ASSERT_EQ(nchw.layers.size(), 6u);
  EXPECT_EQ(nchw.layers[1].path, "graph API: conv fwd, bwd-data, bwd-filter");
  EXPECT_EQ(nchw.layers[2].path, "kiln kernel: pooling (maxpool)");
  EXPECT_EQ(nchw.layers[3].path, "kiln kernel: ceil-mode pooling (cuDNN has no ceil mode)");
  EXPECT_EQ(nchw.layers[4].path, "view of its input");
  EXPECT_EQ(nchw.layers[5].path, "cuBLAS GEMM; tensor descriptors");
  EXPECT_EQ(nchw.operations, 3);
  CudnnReport nhwc = compile_cudnn(g, Target{Backend::cuda, 4, DType::f32, Layout::nhwc});
  EXPECT_EQ(nhwc.layers[4].path, "kiln kernel: NHWC to NCHW copy");
}

// cuDNN offering no engine (only a GPU can say so) is a build error naming the layer and
// quoting cuDNN, the error ConvPlanCache::build throws; the path to it needs a device.
TEST(CudaOpTable, NoEngineIsAGraphErrorNamingTheLayer) {
  Graph g = pool_net();
  const Layer& conv = g.layers()[1];
  const cuda::NoEngineError refusal("the forward convolution of layer 'c'", "CUDNN_STATUS_NOT_SUPPORTED: no kernel");
  EXPECT_EQ(refusal.exit_code(), ExitCode::runtime) << "thrown by ExecPlan as a device error...";
  const GraphError e = cuda::no_engine_error(conv, "forward", "batch 4, fp32, nchw", refusal);
  EXPECT_EQ(e.exit_code(), ExitCode::invalid_input) << "...and reported as a build error";
  ASSERT_EQ(e.diagnostics().size(), 1u);
  const Diagnostic& d = e.diagnostics()[0];
  EXPECT_EQ(d.layer, "c");
  EXPECT_EQ(d.message, "cuDNN rejects its forward convolution (batch 4, fp32, nchw): cuDNN has no engine for it: "
                       "CUDNN_STATUS_NOT_SUPPORTED: no kernel");
  EXPECT_EQ(d.context, detail::describe_layer(conv, true));
}

// An even kernel with `pad: same` pads unevenly; if cuDNN has no engine for it the build
// error says so and how to avoid it. An engine refused by kiln's numerics policy names the
// flag that allows it.
TEST(CudaOpTable, NoEngineHintsAtTheCause) {
  GraphBuilder b("even", Shape::chw(3, 8, 8), 10);
  b.add(layers::conv(4, 2).pad(Padding::same_size()).named("even"))
      .add(layers::conv(4, 3).pad(1).named("odd"))
      .add(layers::flatten().named("flat"))
      .add(layers::linear(10).named("fc"));
  Graph g = b.build();
  const cuda::NoEngineError none("x", "CUDNN_STATUS_NOT_SUPPORTED");
  const GraphError uneven = cuda::no_engine_error(g.layers()[1], "forward", "batch 4, fp32, nchw", none);
  EXPECT_EQ(uneven.diagnostics().at(0).layer, "even");
  EXPECT_EQ(uneven.diagnostics().at(0).hint,
            "its padding differs between sides (top 0, bottom 1, left 0, right 1: pad: same with an even kernel), which "
            "cuDNN may not run; use an odd kernel, or explicit symmetric padding");
  EXPECT_EQ(uneven.exit_code(), ExitCode::invalid_input);
  const cuda::NoEngineError refused("x", "engine 3 refused: tensor core (TF32 on fp32 data; --tf32 allows it)");
  const GraphError policy = cuda::no_engine_error(g.layers()[2], "forward", "batch 4, fp32, nchw", refused);
  EXPECT_NE(policy.diagnostics().at(0).hint.find("--tf32 or --nondeterministic"), std::string::npos)
      << policy.diagnostics().at(0).hint;
}

// A convolution whose output never reaches the loss runs forward only: its plans must not
// include backward passes, which would be bound to a gradient that does not exist.
TEST(CudaOpTable, AnUnusedConvolutionPlansForwardOnly) {
  GraphBuilder b("probe", Shape::chw(3, 8, 8), 10);
  b.add(layers::conv(4, 3).pad(1).named("c1"))
      .add(layers::conv(2, 3).pad(1).named("probe"))
      .add(layers::conv(4, 3).pad(1).from({"c1"}).named("c2"))
      .add(layers::flatten().named("flat"))
      .add(layers::linear(10).named("fc"));
  Graph g = b.build();
  const MemoryPlan memory = plan_memory(g, 4, DType::f32, PlanMode::train, Layout::nchw);
  cuda::ConvPlanCache convs(nullptr, DType::f32, Layout::nchw, cuda::EnginePolicy{});
  const cuda::PrepareContext probe = cuda::prepare_context(g, memory, g.layers()[2], convs, 4, -1, 1);
  EXPECT_FALSE(probe.output_grad);
  EXPECT_EQ(probe.input_grads, std::vector<bool>{true}) << "c1's gradient exists: c2 reaches the loss";
  EXPECT_EQ(probe.param_grads, (std::vector<bool>{false, false}));
  const cuda::PrepareContext used = cuda::prepare_context(g, memory, g.layers()[3], convs, 4, -1, 1);
  EXPECT_TRUE(used.output_grad);
  EXPECT_EQ(used.param_grads, (std::vector<bool>{true, true}));
}

}  // namespace
}  // namespace kiln::test
