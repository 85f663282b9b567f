#pragma once

// A training step as one CUDA graph (host logic; no device needed, so the rules are unit
// tested). The executor hands a step's calls — forward(train), loss, backward, update — to
// a StepRecorder, which holds them until update() completes the step and then, per step
// shape (StepKey: batch size and loss options):
//   - runs it eagerly, kernel by kernel, the first `warmup` times the shape is seen (cuDNN
//     and cuBLAS settle their lazy setup outside any capture);
//   - the next time, captures it into a graph (begin, the same calls, end) and launches it;
//   - from then on launches that graph: one launch instead of one per kernel.
// What changes from step to step is never baked into a graph: the step number (dropout
// masks) and the optimizer's hyperparameters are written to device memory before each step
// (StepRunner::write_step, write_hyper: stream-ordered copies), and the kernels read them
// there; the loss scale lives on the device already; the batch is staged into the same
// input buffer every step. The host-side bookkeeping of the statistics (open a slot, ship
// the block) runs around the launch, never inside a graph. A call that is not the next one
// of a step (evaluation, a read of the weights, staging, profiling) first runs whatever was
// recorded, eagerly, so the host always sees the state its calls imply. Data staging and
// the lookahead average stay outside the graph (a few launches per step).
#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "backend/executor.hpp"
#include "math/sgd.hpp"

namespace kiln::cuda {

// What a captured step fixes: its kernels' sizes and the loss's constants.
struct StepKey {
  std::int64_t n = 0;
  float label_smoothing = 0.0f;
  bool sum = false;
  auto operator<=>(const StepKey&) const = default;
};

// What the recorder asks of the executor. enqueue_* queue kernels (and, between
// begin_capture and end_capture, are captured instead of run); the rest is host work or
// stream-ordered copies, never called while capturing.
class StepRunner {
 public:
  virtual ~StepRunner() = default;
  virtual void write_step(std::uint64_t step) = 0;
  virtual void write_hyper(std::span<const math::SgdHyper> hyper) = 0;
  virtual void enqueue_forward(bool train) = 0;
  virtual void enqueue_loss(const detail::LossOptions& options, bool train) = 0;
  virtual void enqueue_backward() = 0;
  virtual void enqueue_update() = 0;
  virtual void open_stats(std::int64_t tag) = 0;
  virtual void ship_stats() = 0;
  virtual void begin_capture() = 0;
  // The instantiated graph's id (never 0), or 0 when the capture failed: the recorder then
  // runs the step eagerly and never tries that shape again.
  virtual std::uint64_t end_capture() = 0;
  virtual void launch(std::uint64_t graph) = 0;
};

class StepRecorder {
 public:
  // `enabled` false (--no-cuda-graph): every call runs at once, as without a recorder.
  StepRecorder(StepRunner& runner, bool enabled, int warmup = 1, std::size_t max_graphs = 8);

  void forward(bool train, std::uint64_t step, std::int64_t n);
  void loss(const detail::LossOptions& options, bool train, std::int64_t tag);
  void backward();
  void update(std::span<const math::SgdHyper> hyper);
  // Runs what was recorded of an unfinished step, eagerly (before any other executor call).
  void flush();

  // Profiling times each layer with host waits: no recording while it is on.
  void set_enabled(bool on);
  bool enabled() const { return enabled_; }
  bool pending() const { return state_ != State::idle; }

  struct Counts {
    std::int64_t eager = 0, captured = 0, replayed = 0, failed = 0;
  };
  const Counts& counts() const { return counts_; }
  // The ids of the graphs made, by step shape (the executor owns and destroys them).
  std::map<StepKey, std::uint64_t> graphs() const;

 private:
  enum class State { idle, forward, loss, backward };
  struct Entry {
    int seen = 0;
    std::uint64_t graph = 0;
    bool failed = false;
  };
  void run_recorded_eagerly(bool with_update, std::span<const math::SgdHyper> hyper);

  StepRunner& runner_;
  bool enabled_;
  int warmup_;
  std::size_t max_graphs_;
  std::map<StepKey, Entry> entries_;
  Counts counts_;

  // The step being recorded.
  State state_ = State::idle;
  std::uint64_t step_ = 0;
  std::int64_t n_ = 0, tag_ = 0;
  detail::LossOptions loss_;
  bool ship_pending_ = false;  // a training loss's statistics travel after backward
};

}  // namespace kiln::cuda
