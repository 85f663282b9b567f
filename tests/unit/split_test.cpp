// Computed from a loaded dataset: per-channel statistics and the validation split.
#include <algorithm>
#include <cmath>
#include <map>

#include "test_util.hpp"

namespace kiln::test {
namespace {

Dataset patterned(std::int64_t n, Shape sample) {
  Dataset d;
  d.source = "patterned";
  d.sample = sample;
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t k = 0; k < sample.elements(); ++k) d.images.push_back(static_cast<std::uint8_t>((i * 37 + k * 11) % 256));
    d.labels.push_back(static_cast<std::uint8_t>(i % 10));
  }
  return d;
}

TEST(ChannelStats, MatchesADirectComputation) {
  Dataset d = patterned(50, Shape::chw(3, 5, 4));
  // Channel 2 constant: its std would be 0, which would divide by zero.
  for (std::int64_t i = 0; i < d.size(); ++i) std::fill_n(d.images.data() + i * 60 + 40, 20, std::uint8_t{9});
  const ChannelStats s = channel_stats(d);
  ASSERT_EQ(s.mean.size(), 3u);
  ASSERT_EQ(s.std.size(), 3u);
  for (int c = 0; c < 2; ++c) {
    double sum = 0, sq = 0, n = 0;
    for (std::int64_t i = 0; i < d.size(); ++i)
      for (int k = 0; k < 20; ++k) {
        const double v = d.image(i)[c * 20 + k] / 255.0;
        sum += v, sq += v * v, ++n;
      }
    const double mean = sum / n;
    EXPECT_NEAR(s.mean[static_cast<std::size_t>(c)], mean, 1e-6);
    EXPECT_NEAR(s.std[static_cast<std::size_t>(c)], std::sqrt(sq / n - mean * mean), 1e-6);
  }
  EXPECT_NEAR(s.mean[2], 9 / 255.0, 1e-7);
  EXPECT_EQ(s.std[2], 1.0f) << "a constant channel keeps a finite divisor";
}

TEST(ChannelStats, DefaultNormalizationByFormat) {
  Splits cifar;
  cifar.train = patterned(4, Shape::chw(3, 32, 32));
  EXPECT_EQ(default_normalization(cifar).mean, (std::vector<float>{0.4914f, 0.4822f, 0.4465f})) << "CIFAR-10's published constants";
  Splits mnist;
  mnist.format = DataFormat::mnist;
  mnist.train = patterned(4, Shape::chw(1, 28, 28));
  const ChannelStats s = default_normalization(mnist);
  EXPECT_EQ(s.mean, channel_stats(mnist.train).mean);
  EXPECT_EQ(s.mean.size(), 1u);
}

TEST(HoldOut, SplitsDisjointlyKeepingOrderAndIsSeeded) {
  Splits data;
  data.train = patterned(100, Shape::chw(1, 2, 2));
  // Record i is identified by its first byte's pattern: (i * 37) % 256, distinct for i < 100.
  auto ids = [](const Dataset& d) {
    std::vector<int> v;
    for (std::int64_t i = 0; i < d.size(); ++i) v.push_back(d.image(i)[0]);
    return v;
  };
  Splits a = data, b = data, other = data;
  hold_out(a, 30, 1);
  hold_out(b, 30, 1);
  hold_out(other, 30, 2);
  EXPECT_EQ(a.val.size(), 30);
  EXPECT_EQ(a.train.size(), 70);
  EXPECT_EQ(ids(a.val), ids(b.val)) << "same seed, same split";
  EXPECT_NE(ids(a.val), ids(other.val)) << "another seed, another split";
  std::map<int, int> seen;
  for (const Dataset* d : {&a.train, &a.val}) {
    const std::vector<int> v = ids(*d);
    // Both parts keep the files' order: record numbers increase.
    std::vector<int> records;
    for (int id : v)
      for (int i = 0; i < 100; ++i)
        if ((i * 37) % 256 == id) records.push_back(i);
    EXPECT_TRUE(std::is_sorted(records.begin(), records.end()));
    for (int id : v) ++seen[id];
    for (std::int64_t i = 0; i < d->size(); ++i) {
      const int record = records[static_cast<std::size_t>(i)];
      EXPECT_EQ(d->labels[static_cast<std::size_t>(i)], record % 10) << "labels travel with their images";
    }
  }
  EXPECT_EQ(seen.size(), 100u) << "every image in exactly one part";
  for (auto [id, count] : seen) EXPECT_EQ(count, 1) << id;
  EXPECT_EQ(a.val.classes, data.train.classes);
  EXPECT_EQ(a.val.sample, data.train.sample);
}

TEST(HoldOut, RefusesAnEmptyPart) {
  Splits data;
  data.train = patterned(10, Shape::chw(1, 2, 2));
  for (std::int64_t bad : {std::int64_t{0}, std::int64_t{10}, std::int64_t{11}, std::int64_t{-1}}) {
    Splits d = data;
    EXPECT_THROW(hold_out(d, bad, 0), UsageError) << bad;
  }
  Splits twice = data;
  hold_out(twice, 2, 0);
  EXPECT_THROW(hold_out(twice, 2, 0), UsageError);
}

}  // namespace
}  // namespace kiln::test
