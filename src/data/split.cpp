// What is computed from a loaded dataset rather than read: the per-channel statistics that
// normalize formats without published constants, and a validation split held out of the
// training files.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <numeric>

#include "kiln/data.hpp"
#include "kiln/error.hpp"
#include "math/rng.hpp"

namespace kiln {

ChannelStats channel_stats(const Dataset& data) {
  const auto C = static_cast<std::size_t>(data.sample.c);
  const std::int64_t plane = data.sample.h * data.sample.w;
  // Integer sums are exact: 60,000 MNIST images are 4.7e7 bytes, far below 2^63 / 255^2.
  std::vector<std::uint64_t> sum(C, 0), squares(C, 0);
  for (std::int64_t i = 0; i < data.size(); ++i) {
    const std::uint8_t* image = data.image(i);
    for (std::size_t c = 0; c < C; ++c) {
      const std::uint8_t* p = image + static_cast<std::int64_t>(c) * plane;
      std::uint64_t s = 0, q = 0;
      for (std::int64_t k = 0; k < plane; ++k) {
        s += p[k];
        q += static_cast<std::uint64_t>(p[k]) * p[k];
      }
      sum[c] += s;
      squares[c] += q;
    }
  }
  ChannelStats stats;
  const double n = static_cast<double>(data.size()) * static_cast<double>(plane);
  for (std::size_t c = 0; c < C; ++c) {
    const double mean = n > 0 ? static_cast<double>(sum[c]) / n : 0.0;
    const double var = n > 0 ? std::max(0.0, static_cast<double>(squares[c]) / n - mean * mean) : 0.0;
    stats.mean.push_back(static_cast<float>(mean / 255.0));
    // A constant channel would divide by zero: 1 keeps it finite (it carries nothing anyway).
    const double sd = std::sqrt(var) / 255.0;
    stats.std.push_back(sd > 1e-6 ? static_cast<float>(sd) : 1.0f);
  }
  return stats;
}

void check_data(const Graph& graph, const Splits& data) {
  const Dataset& train = data.train;
  std::vector<Diagnostic> diags;
  if (graph.input_shape() != train.sample) {
    Diagnostic d;
    d.loc = graph.layers()[0].loc;
    const Shape s = train.sample;
    d.message = fmt::format("model '{}' takes input {}, but the {} data in '{}' has samples of {} ({} channel{}, {}x{})",
                            graph.name(), graph.input_shape().str(), format_name(data.format), train.source, s.str(), s.c,
                            s.c == 1 ? "" : "s", s.h, s.w);
    d.hint = fmt::format("a model for {} takes input: [{}, {}, {}]{}", format_name(data.format), s.c, s.h, s.w,
                         graph.input_shape().c != s.c ? "; its first conv's channels follow the input's" : "");
    diags.push_back(std::move(d));
  }
  if (graph.classes() != train.classes) {
    Diagnostic d;
    d.loc = graph.output().loc;
    d.message = fmt::format("model '{}' has classes: {}, but the {} data in '{}' has {} classes", graph.name(), graph.classes(),
                            format_name(data.format), train.source, train.classes);
    d.hint = fmt::format("set classes: {} and end the model with a linear layer of out: {}", train.classes, train.classes);
    diags.push_back(std::move(d));
  }
  if (!diags.empty()) throw GraphError(std::move(diags));
  for (const Dataset* d : {&data.train, &data.test, &data.val})
    if (d->size() > 0) check_dataset(graph, *d);
}

ChannelStats default_normalization(const Splits& data) {
  // CIFAR-10's published constants (what every CIFAR-10 recipe uses); the rest from the
  // training images themselves.
  if (data.format == DataFormat::cifar10) return {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
  return channel_stats(data.train);
}

void hold_out(Splits& data, std::int64_t count, std::uint64_t seed) {
  Dataset& train = data.train;
  const std::int64_t n = train.size();
  if (count <= 0 || count >= n)
    throw UsageError(fmt::format("--val-split {} of {} training images of '{}' leaves {}: hold out at least 1 and fewer "
                                 "than {}",
                                 count, n, train.source, count <= 0 ? "no validation image" : "no training image", n));
  if (!data.val.labels.empty()) throw UsageError("hold_out: a validation split was already held out");
  // Fisher-Yates with the counter RNG: a function of (seed, n) alone.
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  const std::uint64_t key = math::stream_key(seed, 0x7A1, static_cast<std::uint64_t>(n));
  for (std::size_t i = order.size(); i > 1; --i)
    std::swap(order[i - 1], order[math::random_below(key, i - 1, static_cast<std::uint32_t>(i))]);
  std::vector<bool> held(static_cast<std::size_t>(n), false);
  for (std::int64_t i = 0; i < count; ++i) held[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])] = true;

  const std::int64_t plane = train.sample.elements();
  Dataset keep, val;
  for (Dataset* d : {&keep, &val}) {
    d->source = train.source;
    d->sample = train.sample;
    d->classes = train.classes;
    d->class_names = train.class_names;
  }
  val.source = fmt::format("{} (validation split)", train.source);
  keep.images.reserve(static_cast<std::size_t>((n - count) * plane));
  val.images.reserve(static_cast<std::size_t>(count * plane));
  // Both keep the files' order: the validation set is a subset, not a shuffle.
  for (std::int64_t i = 0; i < n; ++i) {
    Dataset& to = held[static_cast<std::size_t>(i)] ? val : keep;
    to.images.insert(to.images.end(), train.image(i), train.image(i) + plane);
    to.labels.push_back(train.labels[static_cast<std::size_t>(i)]);
  }
  data.train = std::move(keep);
  data.val = std::move(val);
}

}  // namespace kiln
