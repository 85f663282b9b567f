#include "kiln/bench.hpp"

#include <algorithm>
#include <chrono>
#include <fmt/format.h>

#include "math/rng.hpp"
#include "plan/compiled_plan.hpp"
#include "train/optimizer.hpp"

namespace kiln {

BenchResult bench(const Graph& graph, const TrainConfig& config, const BenchOptions& o) {
  if (o.batch < 1 || o.repeats < 1 || o.steps_per_repeat < 1 || o.warmup < 0)
    throw UsageError("bench: batch, repeats and steps must be at least 1");
  detail::PlanSpec spec;
  spec.batch = o.batch;
  BenchOptions execution = o;
  execution.tf32 = o.tf32 || config.tf32;  // the recipe's `tf32: true` or --tf32
  spec.execution = detail::resolve_options(execution);
  spec.input = {config.mean, config.std, math::PadMode::zero};
  spec.seed = config.seed;
  const std::unique_ptr<detail::CompiledPlan> plan = detail::compile_plan(graph, spec);

  // A random batch: timing does not depend on pixel values, and this needs no dataset.
  const std::int64_t plane = graph.input_shape().elements();
  std::vector<std::uint8_t> images(static_cast<std::size_t>(o.batch * plane)), labels(static_cast<std::size_t>(o.batch));
  const std::uint64_t key = math::stream_key(config.seed, math::kStreamSynth, 99);
  for (std::size_t i = 0; i < images.size(); ++i) images[i] = static_cast<std::uint8_t>(math::random_u64(key, i));
  for (std::size_t i = 0; i < labels.size(); ++i)
    labels[i] = static_cast<std::uint8_t>(math::random_below(key, images.size() + i, static_cast<std::uint32_t>(graph.classes())));
  const std::vector<math::SgdHyper> hyper = detail::sgd_hyper(graph, config, 1.0, 0);
  const detail::LossOptions loss{static_cast<float>(config.label_smoothing), config.sum_loss};
  detail::HostBatch batch;
  batch.n = o.batch;
  batch.images = images.data();
  batch.labels = labels.data();
  std::int64_t step = 0;
  auto train_step = [&] {
    plan->train_step(batch, hyper, step++, loss);
    plan->take_stats(false);
  };

  for (int i = 0; i < o.warmup; ++i) train_step();
  plan->take_stats(true);
  plan->finish();
  BenchResult r;
  r.batch = o.batch;
  r.threads = o.device == Backend::cpu ? plan->execution().threads : 0;
  r.backend = plan->describe();
  for (int rep = 0; rep < o.repeats; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    for (int s = 0; s < o.steps_per_repeat; ++s) train_step();
    // The clock stops when the last step's update has run, not when its loss is known: a
    // device backend's statistics arrive before the update that follows them.
    plan->finish();
    plan->take_stats(true);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.images_per_sec.push_back(static_cast<double>(o.batch * o.steps_per_repeat) / seconds);
  }
  std::vector<double> sorted = r.images_per_sec;
  std::sort(sorted.begin(), sorted.end());
  r.median_images_per_sec = sorted[sorted.size() / 2];

  plan->set_profiling(true);
  for (int s = 0; s < o.steps_per_repeat; ++s) train_step();
  plan->finish();
  plan->take_stats(true);
  auto times = plan->layer_times();
  for (const Layer& layer : graph.layers()) {
    if (layer.index == 0) continue;
    const auto& t = times[static_cast<std::size_t>(layer.index)];
    double calls = static_cast<double>(std::max<std::int64_t>(t.calls, 1));
    r.layers.push_back({layer.name, std::string(op_name(layer.op)), t.forward_ms / calls, t.backward_ms / calls, t.detail});
  }
  return r;
}

}  // namespace kiln
