// Training runs on the CPU: determinism, resume equal to an uninterrupted run, interruption,
// weights files, and a pinned loss trajectory.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <unistd.h>

#include "kiln/kiln.hpp"
#include "test_models.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

// Each test's own temporary directory.
struct TrainDir : TempDir {
  explicit TrainDir(const std::string& name) : TempDir("kiln_train", name) {}
};

const Cifar10& small_data() {
  static const Cifar10 data = [] {
    Cifar10 d = make_synthetic_cifar10({640, 128, 5});
    d.train.source = d.test.source = "synthetic";
    return d;
  }();
  return data;
}

TrainConfig recipe() {
  TrainConfig c;
  c.epochs = 2;
  c.batch = 64;
  c.lr = 0.05;
  c.momentum = 0.9;
  c.nesterov = true;
  c.weight_decay = 5e-4;
  c.schedule.kind = Schedule::Kind::cosine;
  c.label_smoothing = 0.1;
  c.augment = Augment{4, 0, true};
  c.seed = 3;
  c.lookahead.every = 3;  // the averages are part of the state a resume restores
  return c;
}

SafetensorsFile weights_after(const Graph& g, const TrainConfig& c, RunOptions run) {
  Trainer t(g, c, run);
  t.fit(small_data());
  TrainDir tmp("w");
  t.save_weights(tmp.str("w.safetensors"));
  return read_safetensors(tmp.str("w.safetensors"));
}

// The CPU's convolution kernels a run can use: kiln's (what auto picks for these small
// nets) and oneDNN's, where the build has it.
std::vector<CpuConv> conv_kernels() {
  std::vector<CpuConv> k{CpuConv::automatic};
  if (has_onednn()) k.push_back(CpuConv::onednn);
  return k;
}

TEST(Training, SameSeedSameWeights) {
  for (CpuConv conv : conv_kernels()) {
    SCOPED_TRACE(to_string(conv));
    RunOptions run;
    run.threads = 2;
    run.cpu_conv = conv;
    expect_same_weights(weights_after(dropout_bn_net(), recipe(), run), weights_after(dropout_bn_net(), recipe(), run));
  }
}

TEST(Training, ResumeEqualsAnUninterruptedRun) {
  for (CpuConv conv : conv_kernels()) {
  SCOPED_TRACE(to_string(conv));
  TrainDir whole("whole"), split("split");
  RunOptions run;
  run.threads = 2;
  run.cpu_conv = conv;
  run.out = whole.str();
  auto reference = weights_after(dropout_bn_net(), recipe(), run);

  // Stop in the middle of the first epoch (step 7 of 10), then resume to the end.
  RunOptions first = run;
  first.out = split.str();
  first.max_steps = 7;
  {
    Trainer t(dropout_bn_net(), recipe(), first);
    TrainResult r = t.fit(small_data());
    EXPECT_EQ(r.steps, 7);
    EXPECT_TRUE(fs::exists(split.str("train_state.safetensors")));
  }
  RunOptions second = run;
  second.out = split.str();
  second.resume = split.str();
  auto resumed = weights_after(dropout_bn_net(), recipe(), second);
  expect_same_weights(reference, resumed);
  auto final = read_safetensors(split.str("model.safetensors"));
  expect_same_weights(reference, final);
  }
}

TEST(Training, ResumeRejectsAnotherModelOrBatch) {
  TrainDir dir("other");
  RunOptions run;
  run.threads = 1;
  run.out = dir.str();
  run.max_steps = 1;
  Trainer(dropout_bn_net(), recipe(), run).fit(small_data());
  RunOptions again = run;
  again.resume = dir.str();
  TrainConfig other_batch = recipe();
  other_batch.batch = 32;
  try {
    Trainer t(dropout_bn_net(), other_batch, again);
    FAIL() << "expected a CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_TRUE(contains(e.what(), "was written with batch 64, this run uses batch 32")) << e.what();
  }
  Graph quick = load_spec(repo_path("data/models/cifar_quick.yaml")).graph;
  try {
    Trainer t(quick, recipe(), again);
    FAIL() << "expected a CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_TRUE(contains(e.what(), "belongs to model 'small', not 'cifar_quick'")) << e.what();
  }
}

TEST(Training, StopRequestSavesAndReturns) {
  TrainDir dir("stop");
  RunOptions run;
  run.threads = 1;
  run.out = dir.str();
  Trainer t(dropout_bn_net(), recipe(), run);
  t.on_step([&](const StepEvent& e) {
    if (e.step == 3) t.request_stop();
  });
  TrainResult r = t.fit(small_data());
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.steps, 3);
  EXPECT_TRUE(fs::exists(dir.str("train_state.safetensors")));
  EXPECT_TRUE(fs::exists(dir.str("model.safetensors")));
  EXPECT_TRUE(fs::exists(dir.str("metrics.jsonl")));
}

TEST(Training, StopRequestSkipsTheEvaluation) {
  RunOptions run;
  run.threads = 1;
  std::vector<std::optional<double>> evaluated;
  Trainer stopped(dropout_bn_net(), recipe(), run);
  stopped.on_step([&](const StepEvent& e) {
    if (e.step == 3) stopped.request_stop();
  });
  stopped.on_epoch([&](const EpochEvent& e) { evaluated.push_back(e.test_accuracy); });
  TrainResult r = stopped.fit(small_data());
  EXPECT_TRUE(r.interrupted);
  EXPECT_FALSE(r.test_accuracy.has_value());
  ASSERT_EQ(evaluated.size(), 1u);
  EXPECT_FALSE(evaluated[0].has_value());
  // The same run ending at step 3 without a stop request evaluates, as its last step.
  run.max_steps = 3;
  Trainer ended(dropout_bn_net(), recipe(), run);
  EXPECT_TRUE(ended.fit(small_data()).test_accuracy.has_value());
}

// The epoch event carries the evaluation's loss and accuracy: those of Trainer::evaluate on the
// same weights, and its metrics record says the same with the epoch counted from 1.
TEST(Training, EpochEventCarriesTheTestLoss) {
  RunOptions run;
  run.threads = 1;
  run.max_steps = 4;
  Trainer t(dropout_bn_net(), recipe(), run);
  std::vector<EpochEvent> events;
  t.on_epoch([&](const EpochEvent& e) { events.push_back(e); });
  t.fit(small_data());
  ASSERT_FALSE(events.empty());
  const EpochEvent& last = events.back();
  ASSERT_TRUE(last.test_loss.has_value());
  ASSERT_TRUE(last.test_accuracy.has_value());
  const Evaluation again = t.evaluate(small_data().test);
  EXPECT_EQ(*last.test_loss, again.loss);
  EXPECT_EQ(*last.test_accuracy, again.accuracy);
  EXPECT_GT(last.train_seconds, 0.0);
  const std::string record = metrics_record(last);
  EXPECT_TRUE(contains(record, "{\"type\":\"epoch\",\"step\":4,\"epoch\":" + std::to_string(last.epoch + 1) + ",")) << record;
  EXPECT_TRUE(contains(record, "\"test_loss\":") && !contains(record, "\"test_loss\":null")) << record;
  EXPECT_TRUE(contains(record, "\"val_loss\":null,\"val_accuracy\":null")) << "no validation split: " << record;
  EXPECT_EQ(metrics_val_record(last), "");
  StepEvent step;
  step.step = 1;
  step.loss = 2.5;
  step.lr = 0.125;
  EXPECT_EQ(metrics_record(step), "{\"type\":\"step\",\"step\":1,\"epoch\":1,\"loss\":2.5,\"lr\":0.125}");
}

// With a validation split every epoch is judged on it, the test set is evaluated once at
// the end, metrics.jsonl has a "val" line per epoch, and best.safetensors follows validation.
TEST(Training, ValidationSplitIsEvaluatedEveryEpochAndTestOnce) {
  TrainDir tmp("val");
  Splits data = small_data();
  hold_out(data, 128, 7);
  ASSERT_EQ(data.val.size(), 128);
  ASSERT_EQ(data.train.size(), 512);
  RunOptions run;
  run.threads = 1;
  run.out = tmp.str("run");
  TrainConfig c = recipe();
  c.epochs = 3;
  Trainer t(dropout_bn_net(), c, run);
  std::vector<EpochEvent> events;
  t.on_epoch([&](const EpochEvent& e) { events.push_back(e); });
  const TrainResult r = t.fit(data);
  ASSERT_EQ(events.size(), 3u);
  for (const EpochEvent& e : events) {
    ASSERT_TRUE(e.val_accuracy && e.val_loss) << "epoch " << e.epoch + 1;
    EXPECT_EQ(e.test_accuracy.has_value(), e.epoch == 2) << "the test set is evaluated after the last epoch only";
  }
  ASSERT_TRUE(r.val_accuracy && r.test_accuracy);
  EXPECT_EQ(*r.val_accuracy, *events.back().val_accuracy);
  const Evaluation val = t.evaluate(data.val);
  EXPECT_EQ(*events.back().val_accuracy, val.accuracy);
  EXPECT_EQ(*events.back().val_loss, val.loss);

  std::ifstream in(tmp.str("run/metrics.jsonl"));
  std::string line;
  std::vector<std::string> types;
  while (std::getline(in, line))
    if (!contains(line, "\"type\":\"step\"")) types.push_back(line.substr(0, line.find(',')));
  EXPECT_EQ(types, (std::vector<std::string>{"{\"type\":\"epoch\"", "{\"type\":\"val\"", "{\"type\":\"epoch\"",
                                             "{\"type\":\"val\"", "{\"type\":\"epoch\"", "{\"type\":\"val\""}));
  // best.safetensors holds the epoch with the best validation accuracy: evaluating it gives it back.
  double best = 0;
  for (const EpochEvent& e : events) best = std::max(best, *e.val_accuracy);
  RunOptions again;
  again.threads = 1;
  again.init = tmp.str("run/best.safetensors");
  Trainer reloaded(dropout_bn_net(), c, again);
  EXPECT_EQ(reloaded.evaluate(data.val).accuracy, best);
}

TEST(Training, WeightsRoundTripAndPredict) {
  TrainDir dir("predict");
  RunOptions run;
  run.threads = 1;
  run.max_steps = 4;
  Trainer a(dropout_bn_net(), recipe(), run);
  a.fit(small_data());
  a.save_weights(dir.str("w.safetensors"));
  const Dataset& test = small_data().test;
  auto logits_a = a.predict(test.images.data(), 70);
  RunOptions from_file;
  from_file.init = dir.str("w.safetensors");
  // The same thread count: the GEMM's split over threads may round differently with another
  // (it does with OpenBLAS's kernels on AMD EPYC), and this test is about the weights.
  from_file.threads = run.threads;
  Trainer b(dropout_bn_net(), recipe(), from_file);
  auto logits_b = b.predict(test.images.data(), 70);
  ASSERT_EQ(logits_a.size(), 700u);
  EXPECT_EQ(logits_a, logits_b);
  // A weights file is PyTorch's state dict: batchnorm's num_batches_tracked included.
  auto file = read_safetensors(dir.str("w.safetensors"));
  const NamedTensor* tracked = file.find("bn1.num_batches_tracked");
  ASSERT_NE(tracked, nullptr);
  EXPECT_EQ(tracked->type, TensorType::i64);
  EXPECT_EQ(tracked->i64, std::vector<std::int64_t>{4});
}

TEST(Training, InitFromMismatchedWeightsListsEveryProblem) {
  TrainDir dir("mismatch");
  RunOptions run;
  run.max_steps = 1;
  Trainer a(load_spec(repo_path("data/models/cifar_quick.yaml")).graph, recipe(), run);
  a.save_weights(dir.str("quick.safetensors"));
  RunOptions init;
  init.init = dir.str("quick.safetensors");
  try {
    Trainer b(dropout_bn_net(), recipe(), init);
    FAIL();
  } catch (const CheckpointError& e) {
    EXPECT_EQ(e.exit_code(), ExitCode::invalid_input);
    EXPECT_TRUE(contains(e.what(), "conv1.weight")) << e.what();
    EXPECT_TRUE(contains(e.what(), "bn1.weight")) << e.what();
    EXPECT_GE(e.tensors().size(), 3u);
  }
}

TEST(Training, DivergenceStopsWithExitCodeThree) {
  TrainConfig c = recipe();
  c.lr = 1e30;
  RunOptions run;
  run.threads = 1;
  Trainer t(dropout_bn_net(), c, run);
  try {
    t.fit(small_data());
    FAIL();
  } catch (const DivergenceError& e) {
    EXPECT_EQ(e.exit_code(), ExitCode::runtime);
    const std::string m = e.what();
    EXPECT_TRUE(contains(m, "training diverged at step ")) << m;
    EXPECT_TRUE(contains(m, "the first non-finite values are in layer '")) << m;
    EXPECT_TRUE(contains(m, "hint: lower the learning rate (lr was ")) << m;
    EXPECT_TRUE(contains(m, "e.g. --lr 1e+29")) << m;
  }
}

TEST(Schedule, Values) {
  Schedule constant;
  EXPECT_DOUBLE_EQ(constant.factor(17, 100, 10), 1.0);
  Schedule step{Schedule::Kind::step, 2.0, 0.1};
  EXPECT_DOUBLE_EQ(step.factor(19, 100, 10), 1.0);
  EXPECT_NEAR(step.factor(20, 100, 10), 0.1, 1e-12);
  EXPECT_NEAR(step.factor(45, 100, 10), 0.01, 1e-12);
  Schedule cosine{Schedule::Kind::cosine};
  cosine.final = 0.1;
  EXPECT_DOUBLE_EQ(cosine.factor(0, 100, 10), 1.0);
  EXPECT_NEAR(cosine.factor(50, 100, 10), 0.55, 1e-12);
  EXPECT_NEAR(cosine.factor(100, 100, 10), 0.1, 1e-12);
  // airbench: 0.2 -> 1 over the first 23% of the steps, then -> 0.07 (numpy.interp knots).
  Schedule linear{Schedule::Kind::linear};
  linear.warmup = 0.23;
  linear.start = 0.2;
  linear.final = 0.07;
  EXPECT_DOUBLE_EQ(linear.factor(0, 1000, 100), 0.2);
  EXPECT_NEAR(linear.factor(115, 1000, 100), 0.2 + 0.8 * 115.0 / 230.0, 1e-12);
  EXPECT_DOUBLE_EQ(linear.factor(230, 1000, 100), 1.0);
  EXPECT_NEAR(linear.factor(615, 1000, 100), 1.0 - 0.93 * 385.0 / 770.0, 1e-12);
  EXPECT_NEAR(linear.factor(1000, 1000, 100), 0.07, 1e-12);
}

}  // namespace
}  // namespace kiln::test
