#include "cuda/step_graph.hpp"

namespace kiln::cuda {

StepRecorder::StepRecorder(StepRunner& runner, bool enabled, int warmup, std::size_t max_graphs)
    : runner_(runner), enabled_(enabled), warmup_(warmup < 0 ? 0 : warmup), max_graphs_(max_graphs) {}

void StepRecorder::set_enabled(bool on) {
  flush();
  enabled_ = on;
}

std::map<StepKey, std::uint64_t> StepRecorder::graphs() const {
  std::map<StepKey, std::uint64_t> out;
  for (const auto& [key, e] : entries_)
    if (e.graph) out.emplace(key, e.graph);
  return out;
}

// A training forward starts a step; anything else runs at once.
void StepRecorder::forward(bool train, std::uint64_t step, std::int64_t n) {
  flush();
  if (ship_pending_) {  // a training loss whose backward never came: its statistics go now
    runner_.ship_stats();
    ship_pending_ = false;
  }
  if (enabled_ && train) {
    state_ = State::forward;
    step_ = step;
    n_ = n;
    return;
  }
  runner_.write_step(step);
  runner_.enqueue_forward(train);
}

void StepRecorder::loss(const detail::LossOptions& options, bool train, std::int64_t tag) {
  if (state_ == State::forward && train) {
    state_ = State::loss;
    loss_ = options;
    tag_ = tag;
    return;
  }
  flush();
  runner_.open_stats(tag);
  runner_.enqueue_loss(options, train);
  if (train) ship_pending_ = true;  // with backward's gradient check
  else runner_.ship_stats();
}

void StepRecorder::backward() {
  if (state_ == State::loss) {
    state_ = State::backward;
    return;
  }
  flush();
  runner_.enqueue_backward();
  if (ship_pending_) runner_.ship_stats(), ship_pending_ = false;
}

void StepRecorder::update(std::span<const math::SgdHyper> hyper) {
  if (state_ != State::backward) {
    flush();
    runner_.write_hyper(hyper);
    runner_.enqueue_update();
    return;
  }
  state_ = State::idle;
  const StepKey key{n_, loss_.label_smoothing, loss_.sum};
  Entry& e = entries_[key];
  if (!e.graph && (e.failed || e.seen < warmup_ || graphs().size() >= max_graphs_)) {
    ++e.seen;
    run_recorded_eagerly(true, hyper);
    return;
  }
  if (!e.graph) {
    runner_.begin_capture();
    try {
      runner_.enqueue_forward(true);
      runner_.enqueue_loss(loss_, true);
      runner_.enqueue_backward();
      runner_.enqueue_update();
    } catch (...) {
      // A call refused under capture: the capture is ended and discarded, and the step runs
      // eagerly (where a real error shows again, and propagates).
      runner_.end_capture();
      e.graph = 0;
      e.failed = true;
      ++counts_.failed;
      run_recorded_eagerly(true, hyper);
      return;
    }
    e.graph = runner_.end_capture();
    if (!e.graph) {
      e.failed = true;
      ++counts_.failed;
      run_recorded_eagerly(true, hyper);
      return;
    }
    ++counts_.captured;
  } else {
    ++counts_.replayed;
  }
  runner_.write_step(step_);
  runner_.write_hyper(hyper);
  runner_.open_stats(tag_);
  runner_.launch(e.graph);
  runner_.ship_stats();
}

void StepRecorder::flush() {
  if (state_ == State::idle) return;
  run_recorded_eagerly(false, {});
}

// The recorded calls in their order, as the executor would have run them unrecorded.
void StepRecorder::run_recorded_eagerly(bool with_update, std::span<const math::SgdHyper> hyper) {
  const State reached = state_ == State::idle ? State::backward : state_;  // idle: update() completed the step
  state_ = State::idle;
  runner_.write_step(step_);
  runner_.enqueue_forward(true);
  if (reached == State::forward) return;
  runner_.open_stats(tag_);
  runner_.enqueue_loss(loss_, true);
  ship_pending_ = true;
  if (reached == State::loss) return;
  runner_.enqueue_backward();
  runner_.ship_stats();
  ship_pending_ = false;
  if (!with_update) return;
  runner_.write_hyper(hyper);
  runner_.enqueue_update();
  ++counts_.eager;
}

}  // namespace kiln::cuda
