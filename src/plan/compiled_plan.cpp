// The training step, inference and prediction of a compiled plan, written once for every
// client (Trainer, evaluation, bench, kiln::Plan).
#include "plan/compiled_plan.hpp"

#include <algorithm>
#include <fmt/format.h>

#include "kiln/error.hpp"
#include "math/rng.hpp"
#include "plan/init.hpp"

namespace kiln::detail {

CompiledPlan::CompiledPlan(std::unique_ptr<Executor> executor, const PlanSpec& spec, InputTransform train_input)
    : executor_(std::move(executor)),
      execution_(spec.execution),
      seed_(spec.seed),
      train_input_(std::move(train_input)),
      no_labels_(static_cast<std::size_t>(executor_->capacity()), 0) {
  eval_input_ = train_input_;
  eval_input_.pad = math::PadMode::reflect;
}

void CompiledPlan::train_step(const HostBatch& batch, std::span<const math::SgdHyper> hyper, std::int64_t step,
                              const LossOptions& loss) {
  const std::uint64_t key = math::stream_key(seed_, static_cast<std::uint64_t>(step));
  executor_->stage(batch, train_input_);
  executor_->forward(true, key);
  executor_->loss(loss, true, step + 1);
  executor_->backward(key);
  executor_->update(hyper);
}

void CompiledPlan::eval_batch(const HostBatch& batch, std::span<float> logits) {
  executor_->stage(batch, eval_input_);
  executor_->forward(false, 0);
  executor_->read_logits(logits);
}

std::vector<float> CompiledPlan::predict(const std::uint8_t* images, std::int64_t n) {
  if (n < 0) throw UsageError(fmt::format("predict: the number of images must not be negative, got {}", n));
  const auto classes = static_cast<std::size_t>(graph().classes());
  const std::int64_t plane = graph().input_shape().elements();
  std::vector<float> out(static_cast<std::size_t>(n) * classes);
  prepare_remainder(n, capacity());
  for (std::int64_t first = 0; first < n; first += capacity()) {
    const std::int64_t count = std::min(capacity(), n - first);
    HostBatch batch;
    batch.n = count;
    batch.images = images + first * plane;
    batch.labels = no_labels_.data();
    eval_batch(batch, std::span<float>(out.data() + static_cast<std::size_t>(first) * classes,
                                       static_cast<std::size_t>(count) * classes));
  }
  return out;
}

std::unique_ptr<CompiledPlan> compile_plan(const Graph& graph, const PlanSpec& spec) {
  InputTransform input = make_input_transform(graph, spec.input.mean, spec.input.std, spec.input.train_pad);
  if (spec.batch < 1) throw UsageError(fmt::format("the batch size must be at least 1, got {}", spec.batch));
  std::unique_ptr<Executor> executor = make_executor(graph, spec.batch, spec.execution);
  init_params(*executor, spec.seed);
  return std::make_unique<CompiledPlan>(std::move(executor), spec, std::move(input));
}

}  // namespace kiln::detail
