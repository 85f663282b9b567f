// The shape mistakes that reach a forward pass in other frameworks, caught at build time:
// each asserts the layer, the source position, the numbers in the message, and the hint.
#include "test_util.hpp"

namespace kiln::test {
namespace {

const char* kHeader = "name: t\ninput: [3, 32, 32]\nclasses: 10\nlayers:\n";

std::string spec(const std::string& layers) { return std::string(kHeader) + layers; }

TEST(ShapeErrors, KernelLargerThanInput) {
  // PyTorch: Conv2d(3, 64, kernel_size=35) on 32x32 -> "Kernel size can't be greater than actual input size".
  auto d = only_error(spec("  - {name: conv1, op: conv, out: 64, kernel: 35}\n"
                           "  - {op: flatten}\n"
                           "  - {op: linear, out: 10}\n"));
  EXPECT_EQ(d.layer, "conv1");
  EXPECT_EQ(d.loc.file, "bad.yaml");
  EXPECT_EQ(d.loc.line, 5);
  EXPECT_EQ(d.loc.column, 5);
  EXPECT_EQ(d.context, "conv 35x35, stride 1, pad 0");
  EXPECT_EQ(d.message, "kernel 35x35 is larger than its padded input 32x32");
  ASSERT_EQ(d.notes.size(), 1u);
  EXPECT_EQ(d.notes[0], "input 'input' is 3x32x32; the output would be -2x-2");
  EXPECT_EQ(d.hint, "use a kernel of at most 32, or pad by at least 2");
  EXPECT_EQ(d.format(),
            "bad.yaml:5:5: error: layer 'conv1' (conv 35x35, stride 1, pad 0): kernel 35x35 is larger than its padded "
            "input 32x32\n"
            "    input 'input' is 3x32x32; the output would be -2x-2\n"
            "    hint: use a kernel of at most 32, or pad by at least 2\n");
}

TEST(ShapeErrors, KernelLargerDeepInTheNet) {
  // The kernel fits the image but not the feature map three poolings later.
  auto d = only_error(spec("  - {op: conv, out: 16, kernel: 3, pad: 1}\n"
                           "  - {op: maxpool, kernel: 2}\n"
                           "  - {op: maxpool, kernel: 2}\n"
                           "  - {op: maxpool, kernel: 2}\n"
                           "  - {name: late, op: conv, out: 16, kernel: 5, stride: 2}\n"
                           "  - {op: flatten}\n"
                           "  - {op: linear, out: 10}\n"));
  EXPECT_EQ(d.layer, "late");
  EXPECT_EQ(d.loc.line, 9);
  EXPECT_EQ(d.message, "kernel 5x5 is larger than its padded input 4x4");
  EXPECT_EQ(d.notes[0], "input 'maxpool4' is 16x4x4; the output would be 0x0");
  EXPECT_EQ(d.hint, "use a kernel of at most 4, or pad by at least 1");
}

TEST(ShapeErrors, DilatedKernelLargerThanInput) {
  auto d = only_error(spec("  - {name: c, op: conv, out: 4, kernel: 3, dilation: 20}\n  - {op: flatten}\n  - {op: linear, out: 10}\n"));
  EXPECT_EQ(d.message, "dilated kernel 41x41 (3x3, dilation 20) is larger than its padded input 32x32");
  EXPECT_EQ(d.context, "conv 3x3, stride 1, pad 0, dilation 20");
}

TEST(ShapeErrors, PoolingLargerThanFeatureMap) {
  auto d = only_error(spec("  - {op: conv, out: 8, kernel: 3, stride: 2}\n"     // 15x15
                           "  - {op: maxpool, kernel: 2}\n"                      // 7x7
                           "  - {op: maxpool, kernel: 2}\n"                      // 3x3
                           "  - {name: pool3, op: avgpool, kernel: 4}\n"
                           "  - {op: flatten}\n  - {op: linear, out: 10}\n"));
  EXPECT_EQ(d.layer, "pool3");
  EXPECT_EQ(d.loc.line, 8);
  EXPECT_EQ(d.context, "avgpool 4x4, stride 4, pad 0");
  EXPECT_EQ(d.message, "pooling window 4x4 is larger than its padded input 3x3");
  EXPECT_EQ(d.notes[0], "input 'maxpool3' is 8x3x3; the output would be 0x0");
  EXPECT_TRUE(contains(d.hint, "at most 3")) << d.hint;
}

TEST(ShapeErrors, PoolingPadMoreThanHalfKernel) {
  auto d = only_error(spec("  - {name: p, op: maxpool, kernel: 3, pad: 2}\n  - {op: flatten}\n  - {op: linear, out: 10}\n"));
  EXPECT_EQ(d.message, "pad 2 is more than half the kernel 3");
  EXPECT_TRUE(contains(d.hint, "at most 1"));
}

TEST(ShapeErrors, PoolingPaddingFromTheBuilderMustBeSymmetric) {
  auto build = [](LayerDef pool) {
    GraphBuilder b("p", Shape::chw(3, 8, 8), 10);
    b.add(pool.named("p")).add(layers::flatten()).add(layers::linear(10));
    return b.build();
  };
  EXPECT_THROW(build(layers::maxpool(3).stride(1).pad(Padding{0, 1, 0, 1, false})), GraphError);
  EXPECT_THROW(build(layers::maxpool(3).pad_same()), GraphError);
  EXPECT_THROW(build(layers::avgpool(2).dilation(2)), GraphError);
  EXPECT_NO_THROW(build(layers::maxpool(3).stride(1).pad(Padding::hw(1, 0))));
}

TEST(ShapeErrors, GrayscaleConvFedRgb) {
  auto d = only_error(spec("  - {name: gray, op: conv, out: 8, kernel: 3, in: 1}\n  - {op: flatten}\n  - {op: linear, out: 10}\n"));
  EXPECT_EQ(d.layer, "gray");
  EXPECT_EQ(d.loc.line, 5);
  EXPECT_EQ(d.format(),
            "bad.yaml:5:5: error: layer 'gray' (conv 3x3): declares in: 1 channel, but its input 'input' has 3 channels "
            "(3x32x32)\n"
            "    hint: set in: 3, or remove 'in' to infer it\n");
}

TEST(ShapeErrors, BatchNormFeaturesMismatch) {
  auto d = only_error(spec("  - {op: conv, out: 32, kernel: 3, pad: 1}\n"
                           "  - {name: bn, op: batchnorm, features: 64}\n"
                           "  - {op: flatten}\n  - {op: linear, out: 10}\n"));
  EXPECT_EQ(d.layer, "bn");
  EXPECT_EQ(d.loc.line, 6);
  EXPECT_EQ(d.message, "declares features: 64, but its input 'conv1' has 32 channels (32x32x32)");
  EXPECT_EQ(d.hint, "set features: 32, or remove 'features' to infer it");
}

TEST(ShapeErrors, LinearInFeaturesMismatch) {
  // PyTorch: "mat1 and mat2 shapes cannot be multiplied (64x4096 and 1024x10)".
  auto d = only_error(spec("  - {op: conv, out: 64, kernel: 3, pad: 1}\n"
                           "  - {name: pool, op: maxpool, kernel: 4}\n"
                           "  - {op: flatten}\n"
                           "  - {name: fc, op: linear, in: 1024, out: 10}\n"));
  EXPECT_EQ(d.layer, "fc");
  EXPECT_EQ(d.loc.line, 8);
  EXPECT_EQ(d.message, "declares in: 1024, but its input 'flatten3' has 4096 features");
  ASSERT_EQ(d.notes.size(), 2u);
  EXPECT_EQ(d.notes[0], "'flatten3' flattens 'pool' (64x8x8) to 4096 features");
  EXPECT_TRUE(contains(d.notes[1], "(Bx4096 and 1024x10)"));
  EXPECT_EQ(d.hint, "set in: 4096, or remove 'in' to infer it");
}

TEST(ShapeErrors, FourDimensionalTensorIntoLinear) {
  auto d = only_error(spec("  - {op: conv, out: 16, kernel: 3}\n  - {name: fc, op: linear, out: 10}\n"));
  EXPECT_EQ(d.layer, "fc");
  EXPECT_EQ(d.message, "expects a vector of features (2-D with the batch), but its input 'conv1' is 16x30x30 (4-D with the batch)");
  EXPECT_EQ(d.hint, "add {op: flatten} before it: 16x30x30 flattens to 14400 features");
}

TEST(ShapeErrors, ConvAfterFlattenIsNot4D) {
  // PyTorch: "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [64, 3072]".
  auto d = only_error(spec("  - {op: flatten}\n  - {name: c, op: conv, out: 8, kernel: 3}\n  - {op: linear, out: 10}\n"));
  EXPECT_EQ(d.layer, "c");
  EXPECT_EQ(d.message, "expects a C x H x W input (4-D with the batch), but its input 'flatten1' is a vector of 3072 features "
                       "(2-D with the batch)");
}

TEST(ShapeErrors, InputNotChw) {
  auto d = only_error("name: t\ninput: [3072]\nclasses: 10\nlayers:\n  - {op: linear, out: 10}\n");
  EXPECT_EQ(d.loc.line, 2);
  EXPECT_EQ(d.loc.column, 8);
  EXPECT_EQ(d.message, "input must be [C, H, W] (channels, height, width of one sample), got [3072] with 1 number");
  EXPECT_TRUE(d.layer.empty());
}

TEST(ShapeErrors, InputNonPositive) {
  auto d = only_error("name: t\ninput: [3, 0, 32]\nclasses: 10\nlayers:\n  - {op: flatten}\n  - {op: linear, out: 10}\n");
  EXPECT_EQ(d.message, "input sizes must be between 1 and 2147483647, got [3, 0, 32]");
}

TEST(ShapeErrors, OutputNotClassVector) {
  auto d = only_error(spec("  - {op: conv, out: 10, kernel: 3}\n  - {name: gap, op: global_avgpool}\n"));
  EXPECT_EQ(d.layer, "gap");
  EXPECT_EQ(d.message, "the model's output must be a vector of 10 class logits (classes: 10), but this last layer produces 10x1x1");
  EXPECT_EQ(d.hint, "end the model with {op: flatten} and {op: linear, out: 10}");
  auto d2 = only_error(spec("  - {op: flatten}\n  - {name: fc, op: linear, out: 100}\n"));
  EXPECT_EQ(d2.message, "the model's output must be a vector of 10 class logits (classes: 10), but this last layer produces 100 "
                        "features");
  EXPECT_EQ(d2.hint, "end the model with {op: linear, out: 10}");
}

TEST(ShapeErrors, GroupsMustDivideChannels) {
  auto errors = errors_of(spec("  - {name: g, op: conv, out: 10, kernel: 3, groups: 4}\n  - {op: flatten}\n  - {op: linear, out: 10}\n"));
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0].message, "its input 'input' has 3 channels, which groups: 4 does not divide");
  EXPECT_EQ(errors[1].message, "out: 10 is not divisible by groups: 4");
}

TEST(ShapeErrors, StrideDilationGroupsPadRanges) {
  auto errors = errors_of(spec("  - {name: c, op: conv, out: 0, kernel: 3, stride: 0, dilation: 0, groups: 0, pad: -1}\n"
                               "  - {op: flatten}\n  - {op: linear, out: 10}\n"));
  std::string all;
  for (const auto& d : errors) all += d.message + "\n";
  EXPECT_TRUE(contains(all, "out must be at least 1, got 0")) << all;
  EXPECT_TRUE(contains(all, "stride must be at least 1, got 0x0")) << all;
  EXPECT_TRUE(contains(all, "dilation must be at least 1, got 0x0")) << all;
  EXPECT_TRUE(contains(all, "groups must be at least 1, got 0")) << all;
  EXPECT_TRUE(contains(all, "padding must not be negative")) << all;
  for (const auto& d : errors) EXPECT_EQ(d.layer, "c");
}

TEST(ShapeErrors, SamePaddingNeedsStrideOne) {
  auto d = only_error(spec("  - {name: c, op: conv, out: 8, kernel: 3, stride: 2, pad: same}\n  - {op: flatten}\n  - {op: linear, out: 10}\n"));
  EXPECT_EQ(d.message, "pad: same needs stride 1 (as in PyTorch), but stride is 2");
}

TEST(ShapeErrors, AddShapesDiffer) {
  auto d = only_error(spec("  - {name: a, op: conv, out: 16, kernel: 3, pad: 1}\n"
                           "  - {name: b, op: conv, out: 32, kernel: 3, stride: 2, pad: 1}\n"
                           "  - {name: sum, op: add, from: [b, a]}\n"
                           "  - {op: flatten}\n  - {op: linear, out: 10}\n"));
  EXPECT_EQ(d.layer, "sum");
  EXPECT_EQ(d.message, "cannot add 'b' (32x16x16) and 'a' (16x32x32): shapes differ");
  EXPECT_EQ(d.hint, "add needs identical shapes; to match 16x32x32 to 32x16x16, project it with a 1x1 conv, out: 32, stride: 2");
}

TEST(ShapeErrors, ConcatSpatialMismatch) {
  auto d = only_error(spec("  - {name: a, op: conv, out: 16, kernel: 3, pad: 1}\n"
                           "  - {name: b, op: maxpool, kernel: 2}\n"
                           "  - {name: cat, op: concat, from: [a, b]}\n"
                           "  - {op: flatten}\n  - {op: linear, out: 10}\n"));
  EXPECT_EQ(d.layer, "cat");
  EXPECT_EQ(d.message, "cannot concatenate 'a' (16x32x32) and 'b' (16x16x16): height and width differ");
}

TEST(ShapeErrors, ConcatSumsChannels) {
  Spec s = parse_spec(spec("  - {name: a, op: conv, out: 16, kernel: 3, pad: 1}\n"
                           "  - {name: b, op: conv, out: 8, kernel: 1, from: input}\n"
                           "  - {name: cat, op: concat, from: [a, b, input]}\n"
                           "  - {op: global_maxpool}\n  - {op: flatten}\n  - {op: linear, out: 10}\n"));
  EXPECT_EQ(s.graph.find("cat")->shape, Shape::chw(27, 32, 32));
}

TEST(ShapeErrors, OverflowingSizesAreErrorsNotCrashes) {
  auto d = only_error("name: t\ninput: [2000000000, 2000000000, 2000000000]\nclasses: 10\nlayers:\n  - {op: flatten}\n"
                      "  - {op: linear, out: 10}\n");
  EXPECT_EQ(d.message, "input [2000000000, 2000000000, 2000000000] has more elements than fit in 64 bits");
  auto d2 = only_error(spec("  - {name: big, op: conv, out: 99999999999, kernel: 3}\n  - {op: flatten}\n  - {op: linear, out: 10}\n"));
  EXPECT_EQ(d2.message, "out is 99999999999, beyond the largest supported value 2147483647");
  // Each factor fits in 32 bits, their product does not fit in 64.
  auto d3 = only_error("name: t\ninput: [1, 2000000000, 2000000000]\nclasses: 10\nlayers:\n"
                       "  - {name: wide, op: conv, out: 2000000000, kernel: 1}\n  - {op: flatten}\n  - {op: linear, out: 10}\n");
  EXPECT_EQ(d3.layer, "wide");
  EXPECT_EQ(d3.message, "output 2000000000x2000000000x2000000000 has more elements than fit in 64 bits");
}

TEST(ShapeErrors, AllErrorsInOnePassWithoutCascades) {
  // Two independent mistakes are both reported; the layers after each are not.
  auto errors = errors_of(spec("  - {name: c1, op: conv, out: 8, kernel: 40}\n"    // error 1
                               "  - {name: c2, op: conv, out: 8, kernel: 3}\n"     // downstream of c1: silent
                               "  - {name: c3, op: conv, out: 8, kernel: 3, from: input, in: 4}\n"  // error 2
                               "  - {op: add, from: [c2, c3]}\n"                   // downstream: silent
                               "  - {op: flatten}\n  - {op: linear, out: 10}\n"));
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0].layer, "c1");
  EXPECT_EQ(errors[0].loc.line, 5);
  EXPECT_EQ(errors[1].layer, "c3");
  EXPECT_EQ(errors[1].loc.line, 7);
}

TEST(ShapeErrors, DatasetShapeMismatch) {
  Spec s = parse_spec("name: mnist_like\ninput: [1, 28, 28]\nclasses: 10\nlayers:\n  - {op: flatten}\n  - {op: linear, out: 10}\n",
                      "m.yaml");
  Dataset data;
  data.source = "cifar-dir";
  try {
    check_dataset(s.graph, data);
    FAIL() << "expected a GraphError";
  } catch (const GraphError& e) {
    ASSERT_EQ(e.diagnostics().size(), 1u);
    const auto& d = e.diagnostics()[0];
    EXPECT_EQ(d.loc.line, 2);
    EXPECT_EQ(d.message, "model 'mnist_like' takes input 1x28x28, but the dataset 'cifar-dir' has samples of 3x32x32");
    EXPECT_EQ(d.hint, "set input: [3, 32, 32] to match the data");
    EXPECT_EQ(e.exit_code(), ExitCode::invalid_input);
  }
}

TEST(ShapeErrors, DatasetClassesMismatch) {
  Spec s = parse_spec("name: c100\ninput: [3, 32, 32]\nclasses: 100\nlayers:\n  - {op: flatten}\n  - {name: fc, op: linear, out: 100}\n");
  Dataset data;
  data.source = "d";
  try {
    check_dataset(s.graph, data);
    FAIL() << "expected a GraphError";
  } catch (const GraphError& e) {
    ASSERT_EQ(e.diagnostics().size(), 1u);
    EXPECT_EQ(e.diagnostics()[0].message, "model 'c100' has classes: 100, but the dataset 'd' has 10 classes");
    EXPECT_EQ(e.diagnostics()[0].loc.line, 6);
  }
}

}  // namespace
}  // namespace kiln::test
