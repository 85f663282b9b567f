// kiln bench's yardsticks (tools/kiln/flops.hpp): the training FLOPs counted from a graph
// and the datasheet peaks it compares against, without a GPU.
#include <gtest/gtest.h>

#include "kiln/kiln.hpp"
#include "tools/kiln/flops.hpp"

namespace kiln::test {
namespace {

TEST(BenchFlops, BackwardIsTwiceForConvAndLinearOnceOtherwise) {
  GraphBuilder b("f", Shape::chw(3, 8, 8), 10);
  b.add(layers::conv(4, 3).pad(1).named("c"))
      .add(layers::relu().named("r"))
      .add(layers::flatten())
      .add(layers::linear(10).named("fc"));
  const Graph g = b.build();
  const Layer& c = *g.find("c");
  const Layer& r = *g.find("r");
  const Layer& fc = *g.find("fc");
  ASSERT_GT(c.flops, 0);
  EXPECT_EQ(cli::train_flops(c), 3 * c.flops);
  EXPECT_EQ(cli::train_flops(fc), 3 * fc.flops);
  EXPECT_EQ(cli::train_flops(r), 2 * r.flops);
  EXPECT_EQ(cli::backward_flops(c), 2 * c.flops);
}

TEST(BenchFlops, DatasheetPeaksByNameAndArithmetic) {
  auto peak = [](std::string_view gpu, DType dtype, bool tf32 = false) {
    auto p = cli::datasheet_peak(gpu, dtype, tf32);
    return p ? p->tflops : -1.0;
  };
  EXPECT_EQ(peak("NVIDIA H100 80GB HBM3", DType::bf16), 989.4);
  EXPECT_EQ(peak("NVIDIA H100 80GB HBM3", DType::f16), 989.4);
  EXPECT_EQ(peak("NVIDIA H100 80GB HBM3", DType::f32), 66.9);
  EXPECT_EQ(peak("NVIDIA H100 80GB HBM3", DType::f32, true), 494.7);
  EXPECT_EQ(peak("NVIDIA H100 PCIe", DType::bf16), 756.5);
  EXPECT_EQ(peak("NVIDIA H200", DType::bf16), 989.4);
  EXPECT_EQ(peak("NVIDIA A100-SXM4-80GB", DType::bf16), 312.0);
  EXPECT_EQ(peak("NVIDIA A10", DType::bf16), 125.0);   // not A100's
  EXPECT_EQ(peak("NVIDIA L40S", DType::f16), 362.1);   // not L4's
  EXPECT_EQ(peak("NVIDIA L4", DType::f16), 121.0);
  EXPECT_EQ(peak("NVIDIA GeForce RTX 4090", DType::bf16), -1.0);
  EXPECT_EQ(cli::datasheet_peak("NVIDIA A100-SXM4-80GB", DType::f32, true)->arithmetic, "TF32 tensor cores");
}

}  // namespace
}  // namespace kiln::test
