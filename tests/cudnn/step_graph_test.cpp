// The CUDA-graph step's rules (cuda/step_graph.hpp), on the host: which steps run eagerly,
// which are captured and which replayed; that every per-step value is written to device
// memory before the step runs and never inside a capture; that a step interrupted by any
// other call runs as recorded; and that a failed capture falls back to running eagerly.
// A fake StepRunner logs what the executor would do.
#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/step_graph.hpp"

namespace kiln {
namespace {

using cuda::StepKey;
using cuda::StepRecorder;

class FakeRunner final : public cuda::StepRunner {
 public:
  std::vector<std::string> log;
  bool capturing = false;
  bool fail_capture = false;     // end_capture returns 0
  bool throw_in_capture = false; // enqueue_backward throws while capturing
  std::uint64_t next_graph = 1;
  std::vector<std::uint64_t> steps_written;
  std::vector<float> lr_written;

  void write_step(std::uint64_t step) override {
    EXPECT_FALSE(capturing) << "a per-step value written inside a capture would be baked into the graph";
    steps_written.push_back(step);
    log.push_back("step " + std::to_string(step));
  }
  void write_hyper(std::span<const math::SgdHyper> hyper) override {
    EXPECT_FALSE(capturing);
    lr_written.push_back(hyper.empty() ? -1.0f : hyper[0].lr);
    log.push_back("hyper");
  }
  void enqueue_forward(bool train) override { log.push_back(tag(train ? "forward" : "forward(eval)")); }
  void enqueue_loss(const detail::LossOptions&, bool train) override { log.push_back(tag(train ? "loss" : "loss(eval)")); }
  void enqueue_backward() override {
    if (capturing && throw_in_capture) throw std::runtime_error("operation not permitted when stream is capturing");
    log.push_back(tag("backward"));
  }
  void enqueue_update() override { log.push_back(tag("update")); }
  void open_stats(std::int64_t t) override {
    EXPECT_FALSE(capturing) << "host bookkeeping inside a capture";
    log.push_back("open " + std::to_string(t));
  }
  void ship_stats() override {
    EXPECT_FALSE(capturing) << "the statistics' copy goes to a different pinned slot each step: never captured";
    log.push_back("ship");
  }
  void begin_capture() override {
    capturing = true;
    log.push_back("begin");
  }
  std::uint64_t end_capture() override {
    capturing = false;
    log.push_back("end");
    return fail_capture ? 0 : next_graph++;
  }
  void launch(std::uint64_t graph) override { log.push_back("launch " + std::to_string(graph)); }

  std::string tag(const char* what) const { return capturing ? std::string("capture ") + what : what; }
  std::vector<std::string> take() { return std::exchange(log, {}); }
};

const std::vector<math::SgdHyper> kHyper{{.lr = 0.5f}, {.lr = 0.25f}};

void train_step(StepRecorder& r, std::uint64_t step, std::int64_t n, float lr = 0.5f) {
  r.forward(true, step, n);
  r.loss({}, true, static_cast<std::int64_t>(step));
  r.backward();
  std::vector<math::SgdHyper> h = kHyper;
  h[0].lr = lr;
  r.update(h);
}

const std::vector<std::string> kEager{"step 1", "forward", "open 1", "loss", "backward", "ship", "hyper", "update"};

TEST(StepGraph, WarmsUpThenCapturesThenReplays) {
  FakeRunner runner;
  StepRecorder r(runner, true);
  train_step(r, 1, 32);
  EXPECT_EQ(runner.take(), kEager) << "the first step of a shape runs eagerly (cuDNN's and cuBLAS's lazy setup)";
  train_step(r, 2, 32);
  EXPECT_EQ(runner.take(), (std::vector<std::string>{"begin", "capture forward", "capture loss", "capture backward",
                                                    "capture update", "end", "step 2", "hyper", "open 2", "launch 1",
                                                    "ship"}));
  train_step(r, 3, 32);
  EXPECT_EQ(runner.take(), (std::vector<std::string>{"step 3", "hyper", "open 3", "launch 1", "ship"}));
  EXPECT_EQ(r.counts().eager, 1);
  EXPECT_EQ(r.counts().captured, 1);
  EXPECT_EQ(r.counts().replayed, 1);
}

TEST(StepGraph, EveryReplayWritesItsOwnStepAndLearningRate) {
  FakeRunner runner;
  StepRecorder r(runner, true);
  for (std::uint64_t s = 1; s <= 5; ++s) train_step(r, s, 32, 0.1f * static_cast<float>(s));
  EXPECT_EQ(runner.steps_written, (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  ASSERT_EQ(runner.lr_written.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) EXPECT_FLOAT_EQ(runner.lr_written[i], 0.1f * static_cast<float>(i + 1));
}

TEST(StepGraph, TheShortLastBatchHasItsOwnGraph) {
  FakeRunner runner;
  StepRecorder r(runner, true);
  for (std::uint64_t s = 1; s <= 3; ++s) train_step(r, s, 32);
  train_step(r, 4, 8);  // a new shape: warm-up again
  train_step(r, 5, 8);  // captured
  train_step(r, 6, 32); // the first graph, unchanged
  train_step(r, 7, 8);
  const auto graphs = r.graphs();
  ASSERT_EQ(graphs.size(), 2u);
  EXPECT_EQ(graphs.at(StepKey{32, 0.0f, false}), 1u);
  EXPECT_EQ(graphs.at(StepKey{8, 0.0f, false}), 2u);
  const auto log = runner.take();
  EXPECT_EQ(log.back(), "ship");
  EXPECT_EQ(log[log.size() - 2], "launch 2");
  EXPECT_EQ(r.counts().eager, 2);
  EXPECT_EQ(r.counts().captured, 2);
  EXPECT_EQ(r.counts().replayed, 3);
}

TEST(StepGraph, LossOptionsArePartOfTheShape) {
  FakeRunner runner;
  StepRecorder r(runner, true);
  train_step(r, 1, 32);
  train_step(r, 2, 32);
  r.forward(true, 3, 32);
  r.loss({.label_smoothing = 0.2f}, true, 3);
  r.backward();
  r.update(kHyper);
  EXPECT_EQ(r.counts().eager, 2) << "other smoothing: other kernel arguments, so not the captured graph";
}

TEST(StepGraph, AnInterruptedStepRunsAsRecordedAndIsNotCaptured) {
  FakeRunner runner;
  StepRecorder r(runner, true);
  train_step(r, 1, 32);
  runner.take();
  // A test reading the gradients after backward, before the update (read_grad flushes).
  r.forward(true, 2, 32);
  r.loss({}, true, 2);
  r.backward();
  EXPECT_TRUE(runner.log.empty()) << "nothing runs before the step is complete or interrupted";
  r.flush();
  EXPECT_EQ(runner.take(), (std::vector<std::string>{"step 2", "forward", "open 2", "loss", "backward", "ship"}));
  r.update(kHyper);
  EXPECT_EQ(runner.take(), (std::vector<std::string>{"hyper", "update"}));
  EXPECT_EQ(r.counts().captured, 0);
  // A forward alone (flushed by the next forward) runs too.
  r.forward(true, 3, 32);
  r.forward(false, 3, 32);
  EXPECT_EQ(runner.take(), (std::vector<std::string>{"step 3", "forward", "step 3", "forward(eval)"}));
}

TEST(StepGraph, ALossWithoutBackwardShipsBeforeTheNextStep) {
  FakeRunner runner;
  StepRecorder r(runner, false);
  r.forward(true, 1, 8);
  r.loss({}, true, 1);
  r.forward(true, 2, 8);  // no backward for step 1
  r.loss({}, true, 2);
  r.backward();
  EXPECT_EQ(runner.take(), (std::vector<std::string>{"step 1", "forward", "open 1", "loss", "ship", "step 2", "forward", "open 2",
                                                    "loss", "backward", "ship"}))
      << "one ship per open, each after its own loss";
}

TEST(StepGraph, EvaluationRunsAtOnceAndShipsItsOwnStatistics) {
  FakeRunner runner;
  StepRecorder r(runner, true);
  r.forward(false, 0, 100);
  r.loss({}, false, -1);
  EXPECT_EQ(runner.take(), (std::vector<std::string>{"step 0", "forward(eval)", "open -1", "loss(eval)", "ship"}));
}

TEST(StepGraph, DisabledRunsEveryCallAtOnce) {
  FakeRunner runner;
  StepRecorder r(runner, false);
  for (std::uint64_t s = 1; s <= 3; ++s) {
    r.forward(true, s, 32);
    EXPECT_EQ(runner.log.back(), "forward");
    r.loss({}, true, static_cast<std::int64_t>(s));
    r.backward();
    EXPECT_EQ(runner.log.back(), "ship");
    r.update(kHyper);
  }
  EXPECT_EQ(r.counts().captured, 0);
  EXPECT_EQ(std::count(runner.log.begin(), runner.log.end(), "begin"), 0);
  // Profiling turns recording off and back on.
  StepRecorder p(runner, true);
  p.set_enabled(false);
  train_step(p, 1, 32);
  train_step(p, 2, 32);
  EXPECT_EQ(p.counts().captured, 0);
  p.set_enabled(true);
  train_step(p, 3, 32);
  train_step(p, 4, 32);
  EXPECT_EQ(p.counts().captured, 1);
}

TEST(StepGraph, AFailedCaptureRunsTheStepEagerlyAndIsNotRetried) {
  FakeRunner runner;
  runner.fail_capture = true;
  StepRecorder r(runner, true);
  train_step(r, 1, 32);
  runner.take();
  train_step(r, 2, 32);
  auto log = runner.take();
  const std::vector<std::string> eager2{"step 2", "forward", "open 2", "loss", "backward", "ship", "hyper", "update"};
  ASSERT_GE(log.size(), eager2.size());
  EXPECT_EQ(std::vector<std::string>(log.end() - static_cast<std::ptrdiff_t>(eager2.size()), log.end()), eager2);
  train_step(r, 3, 32);
  log = runner.take();
  EXPECT_EQ(std::count(log.begin(), log.end(), "begin"), 0) << "a shape that failed to capture is not tried again";
  EXPECT_EQ(r.counts().failed, 1);
  // A call refused under capture: the capture is ended, the step runs eagerly.
  FakeRunner throwing;
  throwing.throw_in_capture = true;
  StepRecorder t(throwing, true);
  train_step(t, 1, 32);
  train_step(t, 2, 32);
  EXPECT_FALSE(throwing.capturing);
  EXPECT_EQ(t.counts().failed, 1);
  EXPECT_EQ(throwing.log.back(), "update");
}

TEST(StepGraph, GraphsAreBounded) {
  FakeRunner runner;
  StepRecorder r(runner, true, 1, 2);
  for (std::int64_t n = 1; n <= 4; ++n) {
    train_step(r, 1, n);
    train_step(r, 2, n);
  }
  EXPECT_EQ(r.graphs().size(), 2u);
  EXPECT_EQ(r.counts().captured, 2);
}

}  // namespace
}  // namespace kiln
