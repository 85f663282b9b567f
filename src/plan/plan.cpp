// kiln::Plan: the public face of a backend executor. The executor interface stays internal
// (src/backend/executor.hpp); this file is the only place the public API reaches it from
// outside the trainer, through the same make_executor() the trainer uses.
#include "kiln/plan.hpp"

#include <algorithm>
#include <fmt/format.h>
#include <thread>
#include <utility>

#include "backend/executor.hpp"
#include "train/init.hpp"
#include "train/make_executor.hpp"
#include "train/state.hpp"

namespace kiln {

struct Plan::Impl {
  Graph graph;
  Target target;
  detail::InputTransform transform;
  std::unique_ptr<detail::Executor> executor;

  Impl(Graph g, const Target& t) : graph(std::move(g)), target(t) {}

  // Batchnorm's num_batches_tracked as last loaded, written back by weights() so that a
  // checkpoint survives a round trip through a plan.
  std::int64_t batches_tracked = 0;

  // One inference forward pass over `count` <= capacity images; with `labels` (nullptr:
  // none), also the loss, recorded for take_stats().
  void forward(const std::uint8_t* images, const std::uint8_t* labels, std::int64_t count) {
    std::vector<std::uint8_t> zeros;
    if (!labels) zeros.assign(static_cast<std::size_t>(count), 0);
    executor->stage({count, images, labels ? labels : zeros.data(), nullptr, nullptr, nullptr}, transform);
    executor->forward(false, 0);
    if (labels) executor->loss({0.0f, false}, false, -1);
  }

  std::size_t checked_index(std::size_t index) const {
    if (index >= graph.params().size())
      throw UsageError(fmt::format("parameter index {} is out of range: model '{}' has {} parameters and buffers", index,
                                   graph.name(), graph.params().size()));
    return index;
  }
};

namespace {

int resolve_threads(int threads) {
  if (threads > 0) return threads;
  unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

}  // namespace

Plan compile(const Graph& graph, const Target& target, const CompileOptions& options) {
  detail::InputTransform transform = detail::make_input_transform(graph, options.mean, options.std, math::PadMode::zero);
  if (target.batch < 1) throw UsageError(fmt::format("the batch size must be at least 1, got {}", target.batch));

  auto impl = std::make_unique<Plan::Impl>(graph, target);
  impl->transform = std::move(transform);

  RunOptions run;
  run.device = target.backend;
  run.layout = target.layout;
  run.dtype = target.dtype;
  run.threads = options.threads;
  run.workspace_limit = options.workspace_limit;
  run.autotune = options.autotune;
  impl->executor = make_executor(impl->graph, target.batch, run, resolve_threads(options.threads));
  detail::init_params(*impl->executor, options.seed);
  return Plan(std::move(impl));
}

Plan::Plan(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Plan::~Plan() = default;
Plan::Plan(Plan&&) noexcept = default;
Plan& Plan::operator=(Plan&&) noexcept = default;

const Graph& Plan::graph() const { return impl_->graph; }
const Target& Plan::target() const { return impl_->target; }
std::int64_t Plan::batch() const { return impl_->executor->capacity(); }
const MemoryPlan& Plan::memory() const { return impl_->executor->memory(); }
std::string Plan::describe() const { return impl_->executor->describe(); }

std::vector<float> Plan::predict(const std::uint8_t* images, std::int64_t n) {
  if (n < 0) throw UsageError(fmt::format("predict: the number of images must not be negative, got {}", n));
  const auto K = static_cast<std::size_t>(impl_->graph.classes());
  const std::int64_t plane = impl_->graph.input_shape().elements();
  const std::int64_t capacity = batch();
  std::vector<float> out(static_cast<std::size_t>(n) * K);
  for (std::int64_t first = 0; first < n; first += capacity) {
    const std::int64_t count = std::min(capacity, n - first);
    impl_->forward(images + first * plane, nullptr, count);
    impl_->executor->read_logits(
        std::span<float>(out.data() + static_cast<std::size_t>(first) * K, static_cast<std::size_t>(count) * K));
  }
  return out;
}

std::vector<float> Plan::predict(std::span<const std::uint8_t> images) {
  const auto plane = static_cast<std::size_t>(impl_->graph.input_shape().elements());
  if (images.size() % plane != 0)
    throw UsageError(fmt::format("predict: {} bytes are not a whole number of {} images ({} bytes each)", images.size(),
                                 impl_->graph.input_shape().str(), plane));
  return predict(images.data(), static_cast<std::int64_t>(images.size() / plane));
}

Evaluation Plan::evaluate(const Dataset& data) {
  check_dataset(impl_->graph, data);
  Evaluation e;
  const auto K = static_cast<std::size_t>(impl_->graph.classes());
  e.confusion.assign(K, std::vector<std::int64_t>(K, 0));
  const std::int64_t capacity = batch();
  std::vector<float> logits(static_cast<std::size_t>(capacity) * K);
  impl_->executor->take_stats(true);
  for (std::int64_t first = 0; first < data.size(); first += capacity) {
    const std::int64_t count = std::min(capacity, data.size() - first);
    const std::uint8_t* labels = data.labels.data() + first;
    impl_->forward(data.image(first), labels, count);
    impl_->executor->read_logits(logits);
    for (std::int64_t i = 0; i < count; ++i) {
      const float* row = logits.data() + static_cast<std::size_t>(i) * K;
      const auto best = static_cast<std::size_t>(std::max_element(row, row + K) - row);
      ++e.confusion[labels[i]][best];
    }
  }
  const auto stats = detail::total(impl_->executor->take_stats(true));
  e.count = stats.count;
  e.accuracy = stats.count ? static_cast<double>(stats.correct) / static_cast<double>(stats.count) : 0.0;
  e.loss = stats.count ? stats.loss_sum / static_cast<double>(stats.count) : 0.0;
  for (std::size_t k = 0; k < K; ++k) {
    std::int64_t total = 0;
    for (auto c : e.confusion[k]) total += c;
    e.class_accuracy.push_back(total ? static_cast<double>(e.confusion[k][k]) / static_cast<double>(total) : 0.0);
  }
  return e;
}

std::vector<float> Plan::read_param(std::size_t index) const {
  const Param& p = impl_->graph.params()[impl_->checked_index(index)];
  std::vector<float> values(static_cast<std::size_t>(p.elements));
  impl_->executor->read_param(index, values);
  return values;
}

std::vector<float> Plan::read_param(std::string_view name) const {
  auto params = impl_->graph.params();
  for (std::size_t i = 0; i < params.size(); ++i)
    if (params[i].name == name) return read_param(i);
  throw UsageError(fmt::format("model '{}' has no parameter or buffer named '{}'", impl_->graph.name(), name));
}

void Plan::write_param(std::size_t index, std::span<const float> values) {
  const Param& p = impl_->graph.params()[impl_->checked_index(index)];
  if (static_cast<std::int64_t>(values.size()) != p.elements)
    throw UsageError(fmt::format("parameter '{}' has {} elements, got {} values", p.name, p.elements, values.size()));
  impl_->executor->write_param(index, values);
}

SafetensorsFile Plan::weights() const { return detail::weights_file(*impl_->executor, impl_->batches_tracked); }

void Plan::set_weights(const SafetensorsFile& file, const std::string& source) {
  detail::load_weights_file(*impl_->executor, file, source);
  constexpr std::string_view suffix = ".num_batches_tracked";
  for (const NamedTensor& t : file.tensors)
    if (t.type == TensorType::i64 && t.i64.size() == 1 && t.name.ends_with(suffix)) {
      impl_->batches_tracked = t.i64[0];
      break;
    }
}

void Plan::save_weights(const std::string& path) const { write_safetensors(path, weights()); }

void Plan::load_weights(const std::string& path) { set_weights(read_safetensors(path), path); }

}  // namespace kiln
