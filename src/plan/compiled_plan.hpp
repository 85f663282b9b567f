#pragma once

// A graph compiled for one backend: the layer everything that runs a model stands on. The
// Trainer, evaluation, `kiln bench` and the public kiln::Plan reach the backend's executor
// only through it, so the sequence of a training step, the input normalization and the
// per-step dropout key are written once, here.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/executor.hpp"
#include "plan/options.hpp"

namespace kiln::detail {

// The normalization of model inputs, and how training augmentation pads a shifted image.
struct InputOptions {
  std::vector<float> mean;
  std::vector<float> std;
  math::PadMode train_pad = math::PadMode::zero;
};

// What compile_plan() builds.
struct PlanSpec {
  std::int64_t batch = 0;  // the largest batch one step or forward pass runs
  ExecutionOptions execution;
  InputOptions input;
  std::uint64_t seed = 0;  // the initial weights (PyTorch's default init) and the dropout masks
};

class CompiledPlan {
 public:
  CompiledPlan(std::unique_ptr<Executor> executor, const PlanSpec& spec, InputTransform train_input);
  CompiledPlan(const CompiledPlan&) = delete;
  CompiledPlan& operator=(const CompiledPlan&) = delete;

  const Graph& graph() const { return executor_->graph(); }
  std::int64_t capacity() const { return executor_->capacity(); }
  DType dtype() const { return execution_.cuda.dtype; }
  const MemoryPlan& memory() const { return executor_->memory(); }
  std::string describe() const { return executor_->describe(); }
  const ExecutionOptions& execution() const { return execution_; }
  // The training normalization (its pad mode is the augmentation's).
  const InputTransform& train_input() const { return train_input_; }

  // One optimizer step on `batch`: stage (augmented and normalized), forward, loss,
  // backward, update. `step` counts the steps done before this one: it keys the dropout
  // masks with the plan's seed, and the step's stats are recorded under step + 1.
  void train_step(const HostBatch& batch, std::span<const math::SgdHyper> hyper, std::int64_t step, const LossOptions& loss);
  // An inference forward pass over `batch` (its augment: one test-time view, or none);
  // writes batch.n x classes logits to `logits`.
  void eval_batch(const HostBatch& batch, std::span<float> logits);
  // Logits of `n` >= 0 unlabelled images (CIFAR layout), in batches of capacity().
  std::vector<float> predict(const std::uint8_t* images, std::int64_t n);

  // The records of finished training steps (Executor::collect_stats), valid until the next
  // call; the buffer is kept, so this allocates nothing once it has grown.
  std::span<const StepStats> take_stats(bool wait) {
    stats_.clear();
    executor_->collect_stats(wait, stats_);
    return stats_;
  }
  std::uint64_t make_resident(const Dataset& data) { return executor_->make_resident(data); }
  // Waits for every queued step, updates included (Executor::finish).
  void finish() { executor_->finish(); }
  // Gets ready for the short last batch of `records` split into batches of `batch` (at most
  // capacity()), before the first step: Executor::prepare_batches.
  void prepare_remainder(std::int64_t records, std::int64_t batch) {
    const std::int64_t last = batch > 0 ? records % batch : 0;
    if (last > 0 && last < capacity()) executor_->prepare_batches(std::span<const std::int64_t>(&last, 1));
  }

  // Lookahead / EMA (Executor::lookahead_init, lookahead).
  void lookahead_init() { executor_->lookahead_init(); }
  void lookahead(float decay) { executor_->lookahead(decay); }

  // Parameters, buffers, momentum, averages and gradients by index into Graph::params().
  void read_param(std::size_t index, std::span<float> out) const { executor_->read_param(index, out); }
  void write_param(std::size_t index, std::span<const float> in) { executor_->write_param(index, in); }
  void read_momentum(std::size_t index, std::span<float> out) const { executor_->read_momentum(index, out); }
  void write_momentum(std::size_t index, std::span<const float> in) { executor_->write_momentum(index, in); }
  void read_ema(std::size_t index, std::span<float> out) const { executor_->read_ema(index, out); }
  void write_ema(std::size_t index, std::span<const float> in) { executor_->write_ema(index, in); }
  void read_grad(std::size_t index, std::span<float> out) const { executor_->read_grad(index, out); }
  LossScale loss_scale() const { return executor_->loss_scale(); }
  void set_loss_scale(const LossScale& scale) { executor_->set_loss_scale(scale); }

  // Per-layer timing (`kiln bench`); off while training.
  void set_profiling(bool on) { executor_->set_profiling(on); }
  std::vector<LayerTime> layer_times() const { return executor_->layer_times(); }

 private:
  std::unique_ptr<Executor> executor_;
  ExecutionOptions execution_;
  std::uint64_t seed_;
  InputTransform train_input_;
  // Evaluation's: the same normalization, reflect-padded (test-time views translate).
  InputTransform eval_input_;
  std::vector<std::uint8_t> no_labels_;
  std::vector<StepStats> stats_;  // take_stats' buffer  // capacity() zeros, staged with unlabelled images
};

// Compiles `graph` for `spec`: checks the normalization (one mean and one positive, finite
// std per input channel) and the batch (at least 1), builds the backend's executor and
// initializes the weights from spec.seed. Throws UsageError, or what the backend throws
// (DeviceError, GraphError).
std::unique_ptr<CompiledPlan> compile_plan(const Graph& graph, const PlanSpec& spec);

}  // namespace kiln::detail
