// Pooling's PyTorch edge cases by hand: the ceil-mode divisor, cifar_quick's edge windows,
// ties and NaN in a max. The values over many geometries, both layouts, finite differences
// and thread counts are in BackendOps (tests/ops/backend_ops_pool_test.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "math/pool.hpp"
#include "op_harness.hpp"

namespace kiln::test {
namespace {

// F.avg_pool2d(torch.ones(1, 1, 4, 4), 3, 2, 1, ceil_mode=True): windows [-1, 2), [1, 4),
// [3, 5) per axis divide by 3, 3, 2 (the last is cut at H + pad = 5) and read 2, 3, 1 ones.
TEST(OpsPool, AvgCeilDivisorByHand) {
  GraphBuilder b("t", Shape::chw(1, 4, 4), 10);
  b.add(layers::avgpool(3).stride(2).pad(1).ceil().named("p")).add(layers::flatten()).add(layers::linear(10));
  OpHarness h(b.build(), "p", 1);
  ASSERT_EQ(h.layer().shape, Shape::chw(1, 3, 3));
  std::fill(h.x[0].begin(), h.x[0].end(), 1.0f);
  h.forward();
  const double f[3] = {2.0 / 3.0, 1.0, 0.5};
  std::vector<double> want;
  for (double a : f)
    for (double b2 : f) want.push_back(a * b2);
  expect_close(want, h.y, 1e-7, 1e-6, "y");
  EXPECT_FLOAT_EQ(h.y[8], 0.25f);

  math::PoolSpan last = math::pool_span(2, 3, 2, 1, 4);
  EXPECT_EQ(last.begin, 3);
  EXPECT_EQ(last.end, 4);
  EXPECT_EQ(last.extent, 2);
}

// cifar_quick's pool2: 3/2 ceil on 16x16 gives 8x8, and its last row and column of windows
// start at 14 and read 2 rows (divisor 3 * 2, corner 2 * 2).
TEST(OpsPool, CifarQuickAvgpoolEdgeWindows) {
  GraphBuilder b("t", Shape::chw(1, 16, 16), 10);
  b.add(layers::avgpool(3).stride(2).ceil().named("p")).add(layers::flatten()).add(layers::linear(10));
  OpHarness h(b.build(), "p", 1);
  ASSERT_EQ(h.layer().shape, Shape::chw(1, 8, 8));
  std::iota(h.x[0].begin(), h.x[0].end(), 0.0f);  // x[r][c] = 16 r + c
  h.forward();
  EXPECT_FLOAT_EQ(h.y[7 * 8 + 7], (14 * 16 + 14 + 14 * 16 + 15 + 15 * 16 + 14 + 15 * 16 + 15) / 4.0f);
  EXPECT_FLOAT_EQ(h.y[0 * 8 + 7], (14 + 15 + 30 + 31 + 46 + 47) / 6.0f);
  EXPECT_FLOAT_EQ(h.y[0], (0 + 1 + 2 + 16 + 17 + 18 + 32 + 33 + 34) / 9.0f);
}

TEST(OpsPool, MaxTiesGoToTheFirstMaximum) {
  // A 2x2 window of equal values: all the gradient goes to its top-left element.
  GraphBuilder b1("t", Shape::chw(1, 2, 2), 10);
  b1.add(layers::maxpool(2).named("p")).add(layers::flatten()).add(layers::linear(10));
  OpHarness one(b1.build(), "p", 1);
  one.x[0] = {3.0f, 3.0f, 3.0f, 3.0f};
  one.dy = {5.0f};
  one.bind();
  one.forward();
  one.backward();
  EXPECT_EQ(one.dx[0], (std::vector<float>{5.0f, 0.0f, 0.0f, 0.0f}));

}

TEST(OpsPool, MaxPropagatesNaN) {
  GraphBuilder b("t", Shape::chw(1, 2, 2), 10);
  b.add(layers::maxpool(2).named("p")).add(layers::flatten()).add(layers::linear(10));
  OpHarness h(b.build(), "p", 1);
  h.x[0] = {1.0f, kNaN, 2.0f, 0.0f};
  h.bind();
  h.forward();
  EXPECT_TRUE(std::isnan(h.y[0]));
  h.dy = {1.0f};
  h.bind();
  h.backward();
  EXPECT_EQ(h.dx[0][1], 1.0f);
  EXPECT_EQ(h.dx[0][0] + h.dx[0][2] + h.dx[0][3], 0.0f);
}

}  // namespace
}  // namespace kiln::test
