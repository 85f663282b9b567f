// Which cuDNN engines a plan may use (cuda/engine_filter.hpp): fp32 is fp32 unless --tf32,
// results are deterministic unless --nondeterministic. The rule is a host function over an
// engine's numerical notes; reading the notes of a real engine needs no device either: an
// operation graph without a handle finalizes, and so does its engine 0.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cuda/conv_plan_cache.hpp"
#include "cuda/cudnn_backend.hpp"
#include "cuda/engine_filter.hpp"
#include "kiln/kiln.hpp"

namespace kiln::test {
namespace {

using Notes = std::vector<cudnnBackendNumericalNote_t>;

constexpr cuda::EnginePolicy kDefault{};
constexpr cuda::EnginePolicy kTf32{.tf32 = true, .deterministic = true};
constexpr cuda::EnginePolicy kFast{.tf32 = true, .deterministic = false};

TEST(EngineFilter, Fp32RefusesTensorCoresUnlessTf32) {
  for (const Notes& notes : {Notes{CUDNN_NUMERICAL_NOTE_TENSOR_CORE}, Notes{CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS},
                             Notes{CUDNN_NUMERICAL_NOTE_TENSOR_CORE, CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS}}) {
    std::string why;
    EXPECT_FALSE(cuda::engine_allowed(notes, DType::f32, kDefault, &why));
    EXPECT_NE(why.find("--tf32 allows it"), std::string::npos) << why;
    EXPECT_TRUE(cuda::engine_allowed(notes, DType::f32, kTf32));
  }
  std::string why;
  EXPECT_FALSE(cuda::engine_allowed(Notes{CUDNN_NUMERICAL_NOTE_TENSOR_CORE}, DType::f32, kDefault, &why));
  EXPECT_EQ(why, "tensor core (TF32 on fp32 data; --tf32 allows it)");
}

TEST(EngineFilter, Tf32IsIgnoredForHalfTypes) {
  const Notes tensor_core{CUDNN_NUMERICAL_NOTE_TENSOR_CORE, CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS};
  for (DType dtype : {DType::f16, DType::bf16}) {
    EXPECT_TRUE(cuda::engine_allowed(tensor_core, dtype, kDefault)) << to_string(dtype);
  }
}

// bf16/fp16 convolutions accumulate in fp32 like the CPU oracle: an engine that reduces in
// the half type is refused in every dtype and under every policy.
TEST(EngineFilter, NoDtypeReducesInReducedPrecision) {
  for (DType dtype : {DType::f32, DType::f16, DType::bf16})
    for (const cuda::EnginePolicy& policy : {kDefault, kTf32, kFast}) {
      std::string why;
      EXPECT_FALSE(cuda::engine_allowed(Notes{CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION}, dtype, policy, &why))
          << to_string(dtype);
      EXPECT_EQ(why, "reduced-precision reduction (kiln's convolutions accumulate in fp32, in every dtype)");
    }
}

TEST(EngineFilter, NondeterministicEnginesOnlyWhenAsked) {
  const Notes atomics{CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC};
  for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
    std::string why;
    EXPECT_FALSE(cuda::engine_allowed(atomics, dtype, kDefault, &why)) << to_string(dtype);
    EXPECT_EQ(why, "nondeterministic (results vary from run to run; --nondeterministic allows it)");
    EXPECT_FALSE(cuda::engine_allowed(atomics, dtype, kTf32)) << "--tf32 does not imply --nondeterministic";
    EXPECT_TRUE(cuda::engine_allowed(atomics, dtype, kFast));
  }
  // One refused note is enough, wherever it stands.
  EXPECT_FALSE(cuda::engine_allowed(Notes{CUDNN_NUMERICAL_NOTE_STRICT_NAN_PROP, CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC},
                                    DType::f32, kTf32));
}

TEST(EngineFilter, Fp32AlgorithmsStayAllowed) {
  const Notes fp32{CUDNN_NUMERICAL_NOTE_FFT, CUDNN_NUMERICAL_NOTE_WINOGRAD, CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_4x4,
                   CUDNN_NUMERICAL_NOTE_STRICT_NAN_PROP};
  EXPECT_TRUE(cuda::engine_allowed(fp32, DType::f32, kDefault));
  EXPECT_TRUE(cuda::engine_allowed(Notes{}, DType::f32, kDefault));
}

// The notes of a real engine of a real convolution, read as ExecPlan reads them.
Notes engine0_notes(const cuda::BackendDescriptor& operation) {
  cuda::BackendDescriptor graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  cudnnBackendDescriptor_t op = operation.get();
  EXPECT_EQ(graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op), CUDNN_STATUS_SUCCESS);
  if (graph.finalize() != CUDNN_STATUS_SUCCESS) return {};
  cuda::BackendDescriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t g = graph.get();
  const std::int64_t index = 0;
  EXPECT_EQ(engine.set(CUDNN_ATTR_ENGINE_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &g), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(engine.set(CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &index), CUDNN_STATUS_SUCCESS);
  if (engine.finalize() != CUDNN_STATUS_SUCCESS) return {};
  return cuda::engine_notes(engine.get());
}

TEST(EngineFilter, ReadsTheNotesOfARealEngine) {
  cuda::ConvOps ops;
  const cuda::Status s = cuda::make_conv_ops(ops, {2, 3, 8, 8}, {4, 3, 3, 3}, {2, 4, 8, 8}, {.pre_pad = {1, 1}, .post_pad = {1, 1}},
                                             DType::f32, Layout::nchw, 1);
  ASSERT_TRUE(s.ok()) << s.message;
  const Notes notes = engine0_notes(ops.fwd);
  // cuDNN 9.19 without a device: engine 0 finalizes and says STRICT_NAN_PROP only.
  ASSERT_FALSE(notes.empty()) << "engine 0 of an fp32 convolution did not finalize or has no notes";
  for (cudnnBackendNumericalNote_t n : notes) EXPECT_LT(n, CUDNN_NUMERICAL_NOTE_TYPE_COUNT);
  EXPECT_TRUE(cuda::engine_allowed(notes, DType::f32, kDefault)) << cuda::note_name(notes[0]);
}

// `pad: same` with an even kernel pads less above than below (PyTorch's rule). cuDNN's
// graph API takes pre and post paddings: the three operations finalize with top != bottom.
// Whether the device has an engine for them only a GPU says; if not, ConvPlanCache::build
// throws a GraphError naming the layer while the executor is built, before any step.
TEST(EngineFilter, EvenKernelSamePaddingFinalizes) {
  GraphBuilder b("even", Shape::chw(3, 8, 8), 10);
  b.add(layers::conv(4, 2).pad(Padding::same_size()).named("c"))
      .add(layers::flatten().named("flat"))
      .add(layers::linear(10).named("fc"));
  const Graph g = b.build();
  const Layer& conv = g.layers()[1];
  ASSERT_NE(conv.attrs.pad.top, conv.attrs.pad.bottom) << "the case this test is about";
  const cuda::ConvGeometry geometry = cuda::conv_geometry(conv.attrs);
  EXPECT_EQ(geometry.pre_pad, (std::array<std::int64_t, 2>{0, 0}));
  EXPECT_EQ(geometry.post_pad, (std::array<std::int64_t, 2>{1, 1}));
  for (Layout layout : {Layout::nchw, Layout::nhwc}) {
    cuda::ConvOps ops;
    std::string failed;
    const cuda::Status s = cuda::conv_descriptors(ops, g, conv, 4, DType::f32, layout, failed);
    EXPECT_TRUE(s.ok()) << failed << ": " << s.message;
    EXPECT_TRUE(ops.fwd && ops.bwd_data && ops.bwd_filter);
    const CudnnReport report = compile_cudnn(g, Target{Backend::cuda, 4, DType::f32, layout});
    EXPECT_EQ(report.layers[1].path, "graph API: conv fwd, bwd-data, bwd-filter");
  }
}

}  // namespace
}  // namespace kiln::test
