// Mixed precision on the CPU oracle: bf16 and fp16 emulated in fp32 (every value rounded to
// the dtype where a GPU plan stores it; fp32 master weights, optimizer, batchnorm statistics
// and loss), against fp32 over 50 steps; fp16's dynamic loss scale (skipped steps, the scale
// in the training state, resume after a stop); a dtype a resumed run cannot change.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "kiln/kiln.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

struct MpDir : TempDir {
  explicit MpDir(const std::string& name) : TempDir("kiln_mp", name) {}
};

// Strided 3x3 convs, a 3x3 'same' conv of 16 channels (Winograd's kind), batchnorm, relu,
// pooling and a linear layer: every kind of layer a half-precision plan rounds.
Graph net() {
  GraphBuilder b("mixed", Shape::chw(3, 32, 32), 10);
  b.add(layers::conv(16, 3).pad(1).stride(2).named("conv1"))
      .add(layers::batchnorm().named("bn1"))
      .add(layers::relu())
      .add(layers::conv(16, 3).pad(1).bias(false).named("conv2"))
      .add(layers::batchnorm().named("bn2"))
      .add(layers::relu())
      .add(layers::maxpool(2))
      .add(layers::conv(32, 3).pad(1).stride(2).named("conv3"))
      .add(layers::relu())
      .add(layers::global_avgpool())
      .add(layers::flatten())
      .add(layers::linear(10).named("fc"));
  return b.build();
}

const Cifar10& data() {
  static const Cifar10 d = [] {
    Cifar10 c = make_synthetic_cifar10({3200, 64, 11});
    c.train.source = c.test.source = "synthetic";
    return c;
  }();
  return d;
}

TrainConfig recipe(DType dtype) {
  TrainConfig c;
  c.epochs = 2;  // 200 steps: the schedule is still high at step 50
  c.batch = 32;
  c.lr = 0.02;
  c.momentum = 0.9;
  c.nesterov = true;
  c.weight_decay = 5e-4;
  c.schedule.kind = Schedule::Kind::cosine;
  c.seed = 5;
  c.mean = {0.5f, 0.5f, 0.5f};
  c.std = {0.25f, 0.25f, 0.25f};
  c.dtype = dtype;
  return c;
}

struct Trace {
  std::vector<double> loss, scale;
  std::vector<bool> skipped;
  TrainResult result;
};

Trace train(const TrainConfig& config, RunOptions run, std::int64_t steps) {
  run.threads = 2;
  run.max_steps = steps;
  run.evaluate = EvalPolicy::never;
  Trainer t(net(), config, run);
  Trace r;
  t.on_step([&](const StepEvent& e) {
    r.loss.push_back(e.loss);
    r.scale.push_back(e.loss_scale);
    r.skipped.push_back(e.skipped);
  });
  r.result = t.fit(data());
  return r;
}

SafetensorsFile weights(const std::string& path) { return read_safetensors(path); }

// The largest difference of the step losses (batch means: 2.35 at the start, about 2.25
// after 50 steps) from fp32's. Measured: 0.0021 in bf16 and 0.0024 in fp16 (2026-12-07, AVX2);
// the bounds leave room for other CPUs' kernels, whose sums round differently.
constexpr double kBf16LossTolerance = 0.02;
constexpr double kFp16LossTolerance = 0.01;

double mean(const std::vector<double>& v, std::size_t from, std::size_t to) {
  double s = 0;
  for (std::size_t i = from; i < to; ++i) s += v[i];
  return s / static_cast<double>(to - from);
}

TEST(MixedPrecision, LossTracksFp32Over50Steps) {
  const Trace fp32 = train(recipe(DType::f32), {}, 50);
  ASSERT_EQ(fp32.loss.size(), 50u);
  EXPECT_LT(mean(fp32.loss, 40, 50), mean(fp32.loss, 0, 10) - 0.05) << "the net does not learn: the comparison would say little";
  for (DType dtype : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(std::string(to_string(dtype)));
    const Trace half = train(recipe(dtype), {}, 50);
    ASSERT_EQ(half.loss.size(), 50u);
    double worst = 0;
    std::size_t at = 0;
    for (std::size_t i = 0; i < 50; ++i)
      if (const double d = std::fabs(half.loss[i] - fp32.loss[i]); d > worst) worst = d, at = i;
    std::printf("[  NOTE    ] %s: largest step-loss difference from fp32 %.4f (step %zu: %.4f vs %.4f); %lld skipped\n",
                std::string(to_string(dtype)).c_str(), worst, at + 1, half.loss[at], fp32.loss[at],
                static_cast<long long>(half.result.skipped_steps));
    if (std::getenv("KILN_PRINT_LOSSES"))
      for (std::size_t i = 0; i < 50; ++i) std::printf("%zu %.4f %.4f\n", i + 1, fp32.loss[i], half.loss[i]);
    EXPECT_LE(worst, dtype == DType::bf16 ? kBf16LossTolerance : kFp16LossTolerance);
    // The losses differ at all: the dtype is not fp32 under another name.
    EXPECT_GT(worst, 0.0);
    if (dtype == DType::bf16) {
      EXPECT_EQ(half.result.skipped_steps, 0);
      EXPECT_TRUE(std::all_of(half.scale.begin(), half.scale.end(), [](double s) { return s == 0; })) << "bf16 has no loss scale";
    }
  }
}

// A loss scale far too large: the first steps' fp16 gradients overflow, each skips its update
// and halves the scale, and training goes on (no divergence) once it fits; metrics.jsonl
// and the result count them.
TEST(MixedPrecision, Fp16SkipsOverflowingStepsAndLowersTheScale) {
  MpDir out("skip");
  TrainConfig c = recipe(DType::f16);
  c.loss_scale = 1099511627776.0;  // 2^40
  RunOptions run;
  run.out = out.str();
  const Trace r = train(c, run, 40);
  ASSERT_EQ(r.loss.size(), 40u);
  EXPECT_GT(r.result.skipped_steps, 5);
  EXPECT_EQ(r.result.skipped_steps, std::count(r.skipped.begin(), r.skipped.end(), true));
  EXPECT_TRUE(r.skipped.front());
  EXPECT_FALSE(r.skipped.back());
  for (std::size_t i = 0; i + 1 < r.scale.size(); ++i) {
    EXPECT_TRUE(std::isfinite(r.loss[i]));
    EXPECT_EQ(r.scale[i + 1], r.skipped[i] ? r.scale[i] / 2 : r.scale[i]) << "step " << i + 1;
  }
  EXPECT_LT(r.loss.back(), r.loss.front()) << "it learns once the scale fits";
  std::ifstream metrics(out.str("metrics.jsonl"));
  std::string line;
  int skipped_lines = 0;
  while (std::getline(metrics, line)) skipped_lines += line.find("\"skipped\":true") != std::string::npos;
  EXPECT_EQ(skipped_lines, r.result.skipped_steps);
}

// Stopped (as by Ctrl-C) after the scale has changed, then resumed: the same weights as a run
// never interrupted, bit for bit, because the training state keeps the scale.
TEST(MixedPrecision, Fp16ResumeAfterAStopEqualsAnUninterruptedRun) {
  MpDir whole("whole"), split("split");
  TrainConfig c = recipe(DType::f16);
  c.loss_scale = 1e12;  // a few skipped steps before the stop
  c.epochs = 0.3;       // 30 steps
  RunOptions run;
  run.threads = 2;
  run.evaluate = EvalPolicy::never;
  run.out = whole.str();
  {
    Trainer t(net(), c, run);
    t.fit(data());
  }
  RunOptions first = run;
  first.out = split.str();
  float scale_at_stop = 0;
  {
    Trainer t(net(), c, first);
    t.on_step([&](const StepEvent& e) {
      if (e.step == 12) t.request_stop();
    });
    const TrainResult r = t.fit(data());
    EXPECT_TRUE(r.interrupted);
    EXPECT_EQ(r.steps, 12);
    EXPECT_GT(r.skipped_steps, 0);
    const SafetensorsFile state = read_safetensors(split.str("train_state.safetensors"));
    ASSERT_TRUE(state.metadata.count("loss_scale"));
    scale_at_stop = std::stof(state.metadata.at("loss_scale"));
    EXPECT_EQ(state.metadata.at("dtype"), "fp16");
  }
  EXPECT_LT(scale_at_stop, 1e12f) << "the scale had changed before the stop";
  RunOptions second = run;
  second.out = split.str();
  second.resume = split.str();
  {
    Trainer t(net(), c, second);
    t.fit(data());
  }
  expect_same_weights(weights(whole.str("model.safetensors")), weights(split.str("model.safetensors")));
}

// A training state remembers its dtype: resuming it in another is refused, naming both.
TEST(MixedPrecision, ResumeRefusesAnotherDtype) {
  MpDir out("dtype");
  RunOptions run;
  run.out = out.str();
  train(recipe(DType::bf16), run, 3);
  RunOptions again;
  again.out = out.str();
  again.resume = out.str();
  try {
    Trainer t(net(), recipe(DType::f32), again);
    FAIL() << "resumed a bf16 state in fp32";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--dtype bf16"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kiln::test
