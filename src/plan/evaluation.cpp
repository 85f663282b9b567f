#include "plan/evaluation.hpp"

#include <algorithm>
#include <fmt/format.h>

#include "kiln/error.hpp"

#include "data/loader.hpp"
#include "math/loss.hpp"
#include "trace/trace.hpp"

namespace kiln::detail {

std::vector<TtaView> tta_views(bool tta) {
  if (!tta) return {{{0, 0, 0}, 1.0}};
  // airbench's tta_level 2: 0.5 * mirror(x) + 0.25 * mirror(x shifted -1) + 0.25 * mirror(x shifted +1),
  // mirror(v) = (net(v) + net(flip(v))) / 2.
  return {{{0, 0, 0}, 0.25},   {{0, 0, 1}, 0.25},   {{-1, -1, 0}, 0.125},
          {{-1, -1, 1}, 0.125}, {{1, 1, 0}, 0.125}, {{1, 1, 1}, 0.125}};
}

Evaluation evaluate(CompiledPlan& plan, const Dataset& data, const EvalOptions& options) {
  trace::Range range("evaluate");
  const Graph& graph = plan.graph();
  check_dataset(graph, data);
  const auto K = static_cast<std::size_t>(graph.classes());
  Evaluation e;
  e.confusion.assign(K, std::vector<std::int64_t>(K, 0));
  LoaderOptions o;
  o.batch = plan.capacity();
  o.shuffle = false;
  o.resident = plan.make_resident(data);  // uploads only contents not already on the device
  Loader loader(data, o);
  loader.start_epoch(0);
  plan.prepare_remainder(data.size(), plan.capacity());

  const auto views = tta_views(options.tta);
  std::vector<float> logits(static_cast<std::size_t>(plan.capacity()) * K), sum(logits.size());
  std::vector<math::AugmentParams> params(static_cast<std::size_t>(plan.capacity()));
  double loss_sum = 0;
  std::int64_t correct = 0;
  HostBatch batch;
  while (loader.next(batch)) {
    std::fill(sum.begin(), sum.end(), 0.0f);
    for (const TtaView& view : views) {
      std::fill(params.begin(), params.end(), view.params);
      HostBatch b = batch;
      b.augment = params.data();
      plan.eval_batch(b, logits);
      for (std::size_t i = 0; i < static_cast<std::size_t>(batch.n) * K; ++i) sum[i] += static_cast<float>(view.weight) * logits[i];
    }
    for (std::int64_t i = 0; i < batch.n; ++i) {
      const float* row = sum.data() + static_cast<std::size_t>(i) * K;
      auto s = math::softmax_cross_entropy(row, static_cast<int>(K), batch.labels[i], options.label_smoothing, 1.0f,
                                           nullptr);
      loss_sum += s.loss;
      correct += s.correct ? 1 : 0;
      const auto best = static_cast<std::size_t>(std::max_element(row, row + K) - row);
      ++e.confusion[batch.labels[i]][best];
    }
    e.count += batch.n;
  }
  e.accuracy = e.count ? static_cast<double>(correct) / static_cast<double>(e.count) : 0.0;
  e.loss = e.count ? loss_sum / static_cast<double>(e.count) : 0.0;
  for (std::size_t k = 0; k < K; ++k) {
    std::int64_t total = 0;
    for (auto c : e.confusion[k]) total += c;
    e.class_accuracy.push_back(total ? static_cast<double>(e.confusion[k][k]) / static_cast<double>(total) : 0.0);
  }
  return e;
}

std::vector<float> predict(CompiledPlan& plan, const std::uint8_t* images, std::int64_t n, bool tta) {
  if (!tta) return plan.predict(images, n);
  if (n < 0) throw UsageError(fmt::format("predict: the number of images must not be negative, got {}", n));
  const auto classes = static_cast<std::size_t>(plan.graph().classes());
  const std::int64_t plane = plan.graph().input_shape().elements();
  std::vector<float> out(static_cast<std::size_t>(n) * classes, 0.0f), logits(static_cast<std::size_t>(plan.capacity()) * classes);
  std::vector<math::AugmentParams> params(static_cast<std::size_t>(plan.capacity()));
  const std::vector<std::uint8_t> no_labels(static_cast<std::size_t>(plan.capacity()), 0);
  plan.prepare_remainder(n, plan.capacity());
  for (std::int64_t first = 0; first < n; first += plan.capacity()) {
    const std::int64_t count = std::min(plan.capacity(), n - first);
    float* rows = out.data() + static_cast<std::size_t>(first) * classes;
    for (const TtaView& view : tta_views(true)) {
      std::fill(params.begin(), params.end(), view.params);
      HostBatch b;
      b.n = count;
      b.images = images + first * plane;
      b.labels = no_labels.data();
      b.augment = params.data();
      plan.eval_batch(b, logits);
      // The same sum, in the same order, as evaluate()'s.
      for (std::size_t i = 0; i < static_cast<std::size_t>(count) * classes; ++i) rows[i] += static_cast<float>(view.weight) * logits[i];
    }
  }
  return out;
}

}  // namespace kiln::detail
