// add and concat beyond their values (those are in BackendOps,
// tests/ops/backend_ops_join_test.cpp): add of two is exact and runs in place; concat's
// layout of one value by hand.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "op_harness.hpp"

namespace kiln::test {
namespace {

// Three convolutions of the input with `channels[k]` outputs, joined by `join` ("j").
Graph image_join(bool concat, std::vector<std::int64_t> channels) {
  GraphBuilder b("t", Shape::chw(3, 6, 5), 10);
  std::vector<std::string> names;
  for (std::size_t k = 0; k < channels.size(); ++k) {
    names.push_back(fmt::format("c{}", k));
    b.add(layers::conv(channels[k], 3).pad(1).named(names.back()).from({"input"}));
  }
  b.add((concat ? layers::concat(names) : layers::add(names)).named("j")).add(layers::flatten()).add(layers::linear(10));
  return b.build();
}

TEST(OpsJoin, AddOfTwoIsExactAndInPlace) {
  OpHarness h(image_join(false, {4, 4}), "j", 2);
  h.forward();
  for (std::size_t i = 0; i < h.y.size(); ++i) ASSERT_EQ(h.y[i], h.x[0][i] + h.x[1][i]) << i;
  const std::vector<float> y = h.y;
  h.cpu.y = h.x[0].data();  // the output reusing the first input's memory
  h.forward();
  EXPECT_EQ(h.x[0], y);
}

// One value by hand: sample 1, channel 2 (input 1's channel 0), row 1, column 3.
TEST(OpsJoin, ConcatLayoutByHand) {
  OpHarness h(image_join(true, {2, 3, 1}), "j", 2);
  h.forward();
  const std::int64_t plane = 6 * 5;
  EXPECT_EQ(h.y[static_cast<std::size_t>(1 * 6 * plane + 2 * plane + 1 * 5 + 3)],
            h.x[1][static_cast<std::size_t>(1 * 3 * plane + 0 * plane + 1 * 5 + 3)]);
}

}  // namespace
}  // namespace kiln::test
