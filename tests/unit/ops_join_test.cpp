// CPU add and concat against direct double-precision references: per-input gradients,
// accumulate per input, null input gradients, and finite differences.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "op_harness.hpp"

namespace kiln::test {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// op_harness's expect_close lets a NaN through (a NaN error never exceeds the bound), and
// these tests poison unused buffers with NaN: require NaN exactly where the reference has it.
void expect_matches(const std::vector<double>& ref, const float* got, double atol, double rtol, const std::string& what) {
  for (std::size_t i = 0; i < ref.size(); ++i)
    if (std::isnan(got[i]) != std::isnan(ref[i])) {
      ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", reference " << ref[i];
      return;
    }
  expect_close(ref, got, atol, rtol, what);
}

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

// Two linear layers of `features[k]` outputs on the flattened input, joined.
Graph vector_join(bool concat, std::vector<std::int64_t> features) {
  GraphBuilder b("t", Shape::chw(2, 3, 3), 10);
  b.add(layers::flatten().named("f"));
  std::vector<std::string> names;
  for (std::size_t k = 0; k < features.size(); ++k) {
    names.push_back(fmt::format("l{}", k));
    b.add(layers::linear(features[k]).named(names.back()).from({"f"}));
  }
  b.add((concat ? layers::concat(names) : layers::add(names)).named("j")).add(layers::linear(10));
  return b.build();
}

// Runs backward with input 0 overwriting (over NaN), input 1 without a gradient (null), and
// the rest accumulating; checks each against ref[k] (exact: gradients are copies of dy).
void expect_join_grads(OpHarness& h, const std::vector<std::vector<double>>& ref) {
  const std::size_t inputs = h.x.size();
  std::vector<std::vector<float>> before(inputs);
  for (std::size_t k = 0; k < inputs; ++k) {
    before[k] = k == 0 ? std::vector<float>(h.dx[k].size(), kNaN) : h.random(static_cast<std::int64_t>(h.dx[k].size()));
    std::copy(before[k].begin(), before[k].end(), h.dx[k].begin());
  }
  h.bind();
  h.cpu.dx[1] = nullptr;
  for (std::size_t k = 2; k < inputs; ++k) h.cpu.accumulate[k] = true;
  std::fill(h.x[0].begin(), h.x[0].end(), kNaN);  // backward keeps nothing
  std::fill(h.y.begin(), h.y.end(), kNaN);
  h.backward();
  expect_matches(ref[0], h.dx[0].data(), 0.0, 0.0, "dx 0 (overwrite)");
  EXPECT_EQ(h.dx[1], before[1]) << "null dx 1 was written";
  for (std::size_t k = 2; k < inputs; ++k) {
    std::vector<double> sum(ref[k].size());
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] = static_cast<double>(before[k][i] + static_cast<float>(ref[k][i]));
    expect_matches(sum, h.dx[k].data(), 0.0, 0.0, fmt::format("dx {} (accumulate)", k));
  }
  h.bind();
}

// ---- add -----------------------------------------------------------------------------------

void check_add(Graph g, std::int64_t n) {
  OpHarness h(std::move(g), "j", n);
  const std::size_t inputs = h.x.size(), count = h.y.size();
  std::vector<double> y(count);
  for (std::size_t i = 0; i < count; ++i)
    for (std::size_t k = 0; k < inputs; ++k) y[i] += h.x[k][i];
  h.forward();
  expect_matches(y, h.y.data(), 1e-6, 1e-6, "y");  // float sum of 3 values
  std::vector<std::vector<double>> ref(inputs, std::vector<double>(h.dy.begin(), h.dy.end()));
  expect_join_grads(h, ref);
}

TEST(OpsJoin, AddImages) { check_add(image_join(false, {4, 4, 4}), 2); }
TEST(OpsJoin, AddVectors) { check_add(vector_join(false, {7, 7, 7}), 3); }

TEST(OpsJoin, AddOfTwoIsExactAndInPlace) {
  OpHarness h(image_join(false, {4, 4}), "j", 2);
  h.forward();
  for (std::size_t i = 0; i < h.y.size(); ++i) ASSERT_EQ(h.y[i], h.x[0][i] + h.x[1][i]) << i;
  const std::vector<float> y = h.y;
  h.cpu.y = h.x[0].data();  // the output reusing the first input's memory
  h.forward();
  EXPECT_EQ(h.x[0], y);
}

TEST(OpsJoin, AddFiniteDifferences) {
  OpHarness h(image_join(false, {2, 2, 2}), "j", 2);
  h.forward();
  h.backward();
  for (std::size_t k = 0; k < 3; ++k)
    for (std::size_t e = k; e < h.x[k].size(); e += 17) {
      const double fd = h.numeric_grad(&h.x[k][e], 1e-2f);
      EXPECT_NEAR(h.dx[k][e], fd, 1e-3 + 1e-3 * std::fabs(fd)) << "input " << k << " element " << e;
    }
}

// ---- concat --------------------------------------------------------------------------------

// y[i] is x0[i], x1[i], ... one after the other (a sample's channels are contiguous in NCHW).
void check_concat(Graph g, std::int64_t n) {
  OpHarness h(std::move(g), "j", n);
  const std::size_t inputs = h.x.size();
  const auto out_size = static_cast<std::size_t>(h.layer().shape.elements());
  std::vector<double> y(h.y.size());
  std::vector<std::vector<double>> ref(inputs);
  std::size_t offset = 0;
  for (std::size_t k = 0; k < inputs; ++k) {
    const auto size = static_cast<std::size_t>(h.cpu.in_shape(k).elements());
    for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i)
      for (std::size_t j = 0; j < size; ++j) {
        y[i * out_size + offset + j] = h.x[k][i * size + j];
        ref[k].push_back(h.dy[i * out_size + offset + j]);
      }
    offset += size;
  }
  ASSERT_EQ(offset, out_size);
  h.forward();
  expect_matches(y, h.y.data(), 0.0, 0.0, "y");
  expect_join_grads(h, ref);
}

TEST(OpsJoin, ConcatImagesAlongChannels) {
  Graph g = image_join(true, {2, 3, 1});
  EXPECT_EQ(g.find("j")->shape, Shape::chw(6, 6, 5));
  check_concat(g, 3);
}

TEST(OpsJoin, ConcatVectorsAlongFeatures) {
  Graph g = vector_join(true, {5, 7, 2});
  EXPECT_EQ(g.find("j")->shape, Shape::vec(14));
  check_concat(g, 4);
}

// One value by hand: sample 1, channel 2 (input 1's channel 0), row 1, column 3.
TEST(OpsJoin, ConcatLayoutByHand) {
  OpHarness h(image_join(true, {2, 3, 1}), "j", 2);
  h.forward();
  const std::int64_t plane = 6 * 5;
  EXPECT_EQ(h.y[static_cast<std::size_t>(1 * 6 * plane + 2 * plane + 1 * 5 + 3)],
            h.x[1][static_cast<std::size_t>(1 * 3 * plane + 0 * plane + 1 * 5 + 3)]);
}

TEST(OpsJoin, DeterministicAcrossThreadCounts) {
  for (bool concat : {false, true}) {
    std::vector<float> out[2][3];
    for (int t = 0; t < 2; ++t) {
      OpHarness h(image_join(concat, {4, 4}), "j", 3);
      h.cpu.threads = t == 0 ? 1 : 4;
      h.forward();
      h.backward();
      out[t][0] = h.y, out[t][1] = h.dx[0], out[t][2] = h.dx[1];
    }
    for (int k = 0; k < 3; ++k) EXPECT_EQ(out[0][k], out[1][k]) << (concat ? "concat " : "add ") << k;
  }
}

}  // namespace
}  // namespace kiln::test
