// The scale-bias-activation-conv-genstats graphs (cuda/fused_conv.hpp) finalize on the host
// for every group of the shipped models, and hold the shapes of the graph: cuDNN finalizes an
// operation graph whose channel counts disagree, so the dims kiln wrote are read back from
// cuDNN and checked here against the layers' shapes.
#include <gtest/gtest.h>

#include <array>
#include <filesystem>
#include <fmt/format.h>
#include <string>
#include <vector>

#include "cuda/fused_conv.hpp"
#include "kiln/kiln.hpp"

namespace kiln::test {
namespace {

using Dims = std::vector<std::int64_t>;

const Layer& at(const Graph& graph, int index) { return graph.layers()[static_cast<std::size_t>(index)]; }

bool is_activation(OpKind op) {
  return op == OpKind::relu || op == OpKind::leaky_relu || op == OpKind::gelu || op == OpKind::silu ||
         op == OpKind::sigmoid || op == OpKind::tanh;
}

// The groups with a convolution, found as cuda/fusion.cpp's plan_fusion defines them (a
// batchnorm whose only reader is an activation whose only reader is a convolution), kept
// here so that this test does not depend on the planner.
std::vector<cuda::FusedGroup> conv_groups(const Graph& graph) {
  auto sole_reader = [&](const Layer& layer) -> const Layer* {
    if (layer.consumers.size() != 1) return nullptr;
    const Layer& reader = at(graph, layer.consumers[0]);
    return reader.inputs.size() == 1 ? &reader : nullptr;
  };
  std::vector<cuda::FusedGroup> groups;
  for (const Layer& bn : graph.layers()) {
    if (bn.op != OpKind::batchnorm) continue;
    const Layer* act = sole_reader(bn);
    if (!act || !is_activation(act->op)) continue;
    const Layer* conv = sole_reader(*act);
    if (!conv || conv->op != OpKind::conv) continue;
    groups.push_back({.bn = bn.index, .act = act->index, .conv = conv->index, .kernel = cuda::GroupKernel::cudnn, .reason = ""});
  }
  return groups;
}

Dims strides(const Dims& d, Layout layout) {
  const auto s = cuda::strides_for({d[0], d[1], d[2], d[3]}, layout);
  return {s.begin(), s.end()};
}

// What cuDNN holds for `tensor`, against the dims expected from the graph.
void expect_tensor(const char* what, const cuda::TensorDesc& tensor, const Dims& dims, cudnnDataType_t type, Layout layout,
                   bool is_virtual = false) {
  SCOPED_TRACE(what);
  const cuda::FinalizedTensor t = cuda::read_tensor(tensor);
  EXPECT_EQ(t.dims, dims);
  EXPECT_EQ(t.strides, strides(dims, layout));
  EXPECT_EQ(t.type, type);
  EXPECT_EQ(t.is_virtual, is_virtual);
}

// Compiles `group` and checks every tensor of both graphs against the layers' shapes.
void check_group(const Graph& graph, const cuda::FusedGroup& group, const Target& target) {
  const Layer& bn = at(graph, group.bn);
  const Layer& act = at(graph, group.act);
  const Layer& conv = at(graph, group.conv);
  SCOPED_TRACE(fmt::format("{} -> {} -> {}", bn.name, act.name, conv.name));
  cuda::FusedConvCompiled c;
  std::string failed;
  const cuda::Status s = cuda::compile_fused_conv(graph, group, target, c, failed);
  ASSERT_TRUE(s.ok()) << failed << ": " << s.message;
  EXPECT_TRUE(c.fwd_graph && c.wgrad_graph);
  EXPECT_EQ(c.path, fmt::format("cuDNN graph: scale, bias, {0} -> conv fwd -> genstats; "
                                "wgrad: scale, bias, {0} -> conv bwd-filter",
                                op_name(act.op)));
  EXPECT_EQ(c.tensors, 15);
  EXPECT_EQ(c.operations, 9);

  const std::int64_t n = target.batch;
  const Shape& in = bn.shape;
  const Shape& out = conv.shape;
  const Attrs& a = conv.attrs;
  const Dims x{n, in.c, in.h, in.w}, channel{1, in.c, 1, 1};
  const Dims w{a.out, in.c / a.groups, a.kernel.h, a.kernel.w}, y{n, out.c, out.h, out.w}, filter{1, out.c, 1, 1};
  const cudnnDataType_t type = cuda::cudnn_type(target.dtype);
  const Layout layout = target.layout;
  ASSERT_EQ(out.c, a.out);
  expect_tensor("x", c.conv.x, x, type, layout);
  expect_tensor("scale", c.scale, channel, CUDNN_DATA_FLOAT, layout);
  expect_tensor("bias", c.bias, channel, CUDNN_DATA_FLOAT, layout);
  expect_tensor("w", c.conv.w, w, type, layout);
  expect_tensor("y", c.conv.y, y, type, layout);
  expect_tensor("sum", c.sum, filter, CUDNN_DATA_FLOAT, layout);
  expect_tensor("sqsum", c.sqsum, filter, CUDNN_DATA_FLOAT, layout);
  expect_tensor("dy", c.conv.dy, y, type, layout);
  expect_tensor("dw", c.conv.dw, w, type, layout);
  for (const cuda::FusedPrologue* p : {&c.fwd_prologue, &c.wgrad_prologue}) {
    expect_tensor("scaled", p->scaled, x, CUDNN_DATA_FLOAT, layout, true);
    expect_tensor("shifted", p->shifted, x, CUDNN_DATA_FLOAT, layout, true);
    expect_tensor("activated", p->activated, x, CUDNN_DATA_FLOAT, layout, true);
  }
  if (layout == Layout::nhwc) {
    // KRSC: the input channel is innermost, as cuDNN's NHWC engines read the weight.
    const Dims krsc{a.kernel.h * a.kernel.w * w[1], 1, a.kernel.w * w[1], w[1]};
    EXPECT_EQ(cuda::read_tensor(c.conv.w).strides, krsc);
  }
}

const Target kTargets[] = {
    {.backend = Backend::cuda, .batch = 128, .dtype = DType::bf16, .layout = Layout::nhwc},
    {.backend = Backend::cuda, .batch = 128, .dtype = DType::f16, .layout = Layout::nhwc},
    {.backend = Backend::cuda, .batch = 128, .dtype = DType::f32, .layout = Layout::nchw},
};

// From CMake, not __FILE__ (a compiler launcher makes __FILE__ relative to the build folder).
Spec shipped(const char* model) {
  return load_spec((std::filesystem::path(KILN_SOURCE_DIR) / "data" / "models" / (std::string(model) + ".yaml")).string());
}

TEST(FusedConv, ShippedModelsFinalizeWithTheirShapes) {
  struct Model {
    const char* name;
    std::size_t groups;
    OpKind activation;
  };
  // airbench: g1_bn1+g1_act1 -> g1_conv2, g1_bn2+g1_act2 -> g2_conv1, ... (the last group's
  // activation feeds a pool); resnet20: each block's bn1+relu1 -> conv2 (the other
  // batchnorms feed adds, and relu1 of the stem has two readers).
  for (const Model& m : {Model{"airbench", 5, OpKind::gelu}, Model{"resnet20", 9, OpKind::relu}}) {
    const Spec spec = shipped(m.name);
    const std::vector<cuda::FusedGroup> groups = conv_groups(spec.graph);
    ASSERT_EQ(groups.size(), m.groups) << m.name;
    for (const Target& target : kTargets) {
      SCOPED_TRACE(fmt::format("{} {} {}", m.name, to_string(target.dtype), to_string(target.layout)));
      for (const cuda::FusedGroup& group : groups) {
        EXPECT_EQ(at(spec.graph, group.act).op, m.activation);
        check_group(spec.graph, group, target);
      }
    }
  }
}

TEST(FusedConv, NamedGroupOfAirbench) {
  const Spec spec = shipped("airbench");
  const auto groups = conv_groups(spec.graph);
  ASSERT_FALSE(groups.empty());
  EXPECT_EQ(at(spec.graph, groups[0].bn).name, "g1_bn1");
  EXPECT_EQ(at(spec.graph, groups[0].act).name, "g1_act1");
  EXPECT_EQ(at(spec.graph, groups[0].conv).name, "g1_conv2");
  // 64 channels at 15x15 (32 -> whiten, 2x2 unpadded: 31 -> g1_pool: 15), into 64 filters of 3x3.
  cuda::FusedConvCompiled c;
  std::string failed;
  ASSERT_TRUE(cuda::compile_fused_conv(spec.graph, groups[0], kTargets[0], c, failed).ok()) << failed;
  EXPECT_EQ(cuda::read_tensor(c.conv.x).dims, (Dims{128, 64, 15, 15}));
  EXPECT_EQ(cuda::read_tensor(c.conv.w).dims, (Dims{64, 64, 3, 3}));
  EXPECT_EQ(cuda::read_tensor(c.sum).dims, (Dims{1, 64, 1, 1}));
}

// bn -> `activation` -> conv on 8 channels of 12x12, the conv strided and grouped to cover
// the geometry conv_descriptors takes.
Graph small_group(LayerDef activation, LayerDef conv) {
  GraphBuilder b("fused", Shape::chw(8, 12, 12), 10);
  b.add(layers::batchnorm().named("bn"))
      .add(activation.named("act"))
      .add(conv.named("conv"))
      .add(layers::global_avgpool().named("gap"))
      .add(layers::flatten().named("flat"))
      .add(layers::linear(10).named("fc"));
  return b.build();
}

TEST(FusedConv, EveryActivationHasAPointwiseMode) {
  const std::vector<LayerDef> activations{layers::relu(),   layers::leaky_relu(0.2), layers::gelu(),
                                          layers::silu(),   layers::sigmoid(),       layers::tanh()};
  for (const LayerDef& activation : activations) {
    for (const LayerDef& conv : {layers::conv(16, 3).pad(1), layers::conv(6, 3).stride(2).pad(1).groups(2),
                                 layers::conv(4, 1)}) {
      const Graph g = small_group(activation, conv);
      const auto groups = conv_groups(g);
      ASSERT_EQ(groups.size(), 1u) << op_name(activation.op);
      for (const Target& target : kTargets) {
        SCOPED_TRACE(fmt::format("{} {} {}", op_name(activation.op), to_string(target.dtype), to_string(target.layout)));
        check_group(g, groups[0], {.backend = Backend::cuda, .batch = 4, .dtype = target.dtype, .layout = target.layout});
      }
    }
  }
}

// kiln's activations all have a cuDNN pointwise mode, so the refusal is reached by a group
// the planner never makes: a scale layer where the activation stands.
TEST(FusedConv, ALayerWithoutAPointwiseModeIsRefusedByName) {
  const Graph g = small_group(layers::scale(2.0), layers::conv(16, 3).pad(1));
  const cuda::FusedGroup group{.bn = 1, .act = 2, .conv = 3, .kernel = cuda::GroupKernel::cudnn, .reason = ""};
  ASSERT_EQ(at(g, group.act).op, OpKind::scale);
  cuda::FusedConvCompiled c;
  std::string failed;
  const cuda::Status s = cuda::compile_fused_conv(g, group, kTargets[0], c, failed);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(failed, "activation pointwise descriptor");
  EXPECT_EQ(s.message, "cuDNN's convolution prologue has no pointwise mode for scale (layer 'act')");
  EXPECT_FALSE(c.fwd_graph);
}

TEST(FusedConv, AGroupWithoutAConvolutionIsRefused) {
  GraphBuilder b("no_conv", Shape::chw(8, 12, 12), 10);
  b.add(layers::batchnorm().named("bn"))
      .add(layers::gelu().named("act"))
      .add(layers::global_avgpool().named("gap"))
      .add(layers::flatten().named("flat"))
      .add(layers::linear(10).named("fc"));
  const Graph g = b.build();
  EXPECT_TRUE(conv_groups(g).empty());
  const cuda::FusedGroup group{.bn = 1, .act = 2, .conv = -1, .kernel = cuda::GroupKernel::kiln, .reason = ""};
  cuda::FusedConvCompiled c;
  std::string failed;
  const cuda::Status s = cuda::compile_fused_conv(g, group, kTargets[0], c, failed);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(failed, "fused convolution");
  EXPECT_EQ(s.message, "batchnorm 'bn' and activation 'act' have no convolution to fuse into");
}

}  // namespace
}  // namespace kiln::test
