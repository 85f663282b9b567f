// The CUDA executor against the CPU executor: the same graph, weights and batch through a
// whole training step (staging with augmentation, forward, loss, backward, optimizer), in
// both layouts; the resident and streaming pipelines; a short training run.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <random>

#include <fmt/format.h>

#include "backend/executor.hpp"
#include "kiln/kiln.hpp"
#include "train/init.hpp"

namespace kiln::test {
namespace {

bool no_device() { return cuda_device_count() == 0; }

#define KILN_REQUIRE_GPU()                                                   \
  do {                                                                       \
    if (no_device()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason(); \
  } while (0)

Graph mixed_net() {
  GraphBuilder b("mixed", Shape::chw(3, 16, 16), 10);
  b.add(layers::conv(8, 3).pad(1).named("stem"))
      .add(layers::batchnorm().named("bn"))
      .add(layers::relu().named("r"))
      .add(layers::conv(8, 3).pad(1).bias(false).named("c1"))
      .add(layers::gelu().named("g"))
      .add(layers::add({"g", "r"}).named("sum"))
      .add(layers::maxpool(3).stride(2).ceil().named("pool"))
      .add(layers::conv(4, 1).named("side"))
      .add(layers::concat({"pool", "side"}).named("cat"))
      .add(layers::dropout(0.25).named("drop"))
      .add(layers::avgpool(2).named("avg"))
      .add(layers::flatten().named("flat"))
      .add(layers::linear(16).named("fc1"))
      .add(layers::tanh().named("t"))
      .add(layers::linear(10).named("fc2"))
      .add(layers::scale(0.5).named("s"));
  return b.build();
}

struct Batch {
  std::vector<std::uint8_t> images, labels;
  std::vector<math::AugmentParams> augment;
  std::vector<std::int64_t> indices;
  Dataset data;
};

Batch make_batch(const Graph& g, std::int64_t n) {
  Batch b;
  std::mt19937 rng(5);
  const std::int64_t plane = g.input_shape().elements();
  b.data.sample = g.input_shape();
  b.data.images.resize(static_cast<std::size_t>(2 * n * plane));
  for (auto& p : b.data.images) p = static_cast<std::uint8_t>(rng() % 256);
  for (std::int64_t i = 0; i < 2 * n; ++i) b.data.labels.push_back(static_cast<std::uint8_t>(rng() % 10));
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t record = (i * 7 + 3) % (2 * n);
    b.indices.push_back(record);
    b.images.insert(b.images.end(), b.data.image(record), b.data.image(record) + plane);
    b.labels.push_back(b.data.labels[static_cast<std::size_t>(record)]);
    b.augment.push_back({static_cast<std::int16_t>(static_cast<int>(rng() % 9) - 4), static_cast<std::int16_t>(static_cast<int>(rng() % 9) - 4),
                         static_cast<std::uint8_t>(rng() % 2)});
  }
  return b;
}

void expect_close(const std::vector<float>& gpu, const std::vector<float>& cpu, double atol, double rtol, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  std::size_t bad = 0, worst = 0;
  double worst_excess = 0;
  for (std::size_t i = 0; i < cpu.size(); ++i) {
    double excess = std::fabs(static_cast<double>(gpu[i]) - cpu[i]) - (atol + rtol * std::fabs(cpu[i]));
    if (!(excess <= 0)) {
      ++bad;
      if (!(excess <= worst_excess)) worst_excess = excess, worst = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << cpu.size() << " elements differ; worst at " << worst << ": gpu "
                     << gpu[worst] << ", cpu " << cpu[worst] << " (atol " << atol << ", rtol " << rtol << ")";
}

// PyTorch's initialization with seed 9 on the CPU executor, copied to the CUDA one.
void seed_weights(const Graph& g, detail::Executor& cpu, detail::Executor& gpu) {
  detail::init_params(cpu, 9);
  auto params = g.params();
  for (std::size_t p = 0; p < params.size(); ++p) {
    std::vector<float> v(static_cast<std::size_t>(params[p].elements));
    cpu.read_param(p, v);
    gpu.write_param(p, v);
  }
}

// The bounds of compare_step: fp32's, and in bf16/fp16 (both backends in the dtype, the CPU
// emulating it) one or two units of the dtype's last place where the backends' fp32 sums,
// rounded to the dtype, land on either side of a rounding boundary.
// The weights after the step differ by lr times the gradients' difference (unscaled), so
// their bound follows the gradients'.
struct StepTolerance {
  double logits_atol, logits_rtol, loss_rel, grad_rel, grad_rtol, weight_atol, weight_rtol;
};
StepTolerance step_tolerance(DType dtype) {
  switch (dtype) {
    case DType::bf16: return {2e-2, 4e-2, 1e-2, 3e-2, 6e-2, 2e-3, 4e-3};
    case DType::f16: return {4e-3, 8e-3, 3e-3, 6e-3, 2e-2, 5e-4, 2e-3};
    case DType::f32: break;
  }
  return {1e-3, 1e-2, 1e-3, 2e-3, 1e-2, 1e-4, 1e-3};
}

// One training step on both backends from the same weights; compares logits, loss,
// gradients and updated weights.
void compare_step(Layout layout, bool resident, std::int64_t n, DType dtype = DType::f32) {
  Graph g = mixed_net();
  const std::int64_t capacity = 8;
  const StepTolerance tol = step_tolerance(dtype);
  auto cpu = detail::make_cpu_executor(g, capacity, 2, Layout::nchw, CpuConv::automatic, dtype);
  detail::CudaOptions o;
  o.layout = layout;
  o.dtype = dtype;
  o.batch_sizes = {n};  // a short batch: planned at construction (the Trainer run below plans on first use)
  auto gpu = detail::make_cuda_executor(g, capacity, o);
  seed_weights(g, *cpu, *gpu);
  auto params = g.params();
  Batch b = make_batch(g, n);
  std::uint64_t key = 0;
  if (resident) {
    key = gpu->make_resident(b.data);
    ASSERT_NE(key, 0u);
  }
  detail::HostBatch hb{n, b.images.data(), b.labels.data(), b.augment.data(), key, b.indices.data()};
  detail::InputTransform t;
  t.pad = math::PadMode::reflect;
  t.mean = {0.5f, 0.4f, 0.3f};
  t.inv_std = {4.0f, 5.0f, 6.0f};
  std::vector<math::SgdHyper> hyper(params.size(), math::SgdHyper{0.05f, 0.9f, 5e-4f, 0.0f, true});
  for (auto* ex : {cpu.get(), gpu.get()}) {
    // fp16: a scale that leaves this tiny net's largest gradients (fc2's, summed over the
    // batch) far from fp16's 65504 (the initial 65536 could overflow them; then both skip).
    if (dtype == DType::f16) ex->set_loss_scale({1024.0f, 0});
    ex->stage(hb, t);
    ex->forward(true, 77);
    ex->loss({0.1f, false}, true, 1);
  }
  std::vector<float> lc(static_cast<std::size_t>(n * 10)), lg(lc.size());
  cpu->read_logits(lc);
  gpu->read_logits(lg);
  expect_close(lg, lc, tol.logits_atol, tol.logits_rtol, "logits");
  for (auto* ex : {cpu.get(), gpu.get()}) {
    ex->backward(77);
    ex->update(hyper);
  }
  auto sc = detail::total(cpu->take_stats(true)), sg = detail::total(gpu->take_stats(true));
  EXPECT_EQ(sg.count, n);
  EXPECT_NEAR(sg.loss_sum, sc.loss_sum, tol.loss_rel * std::fabs(sc.loss_sum) + 1e-3);
  if (dtype == DType::f32) {
    EXPECT_EQ(sg.correct, sc.correct);  // half logits may tie or swap a close argmax
  }
  EXPECT_FALSE(sg.nonfinite_grad);
  EXPECT_FALSE(sg.skipped);
  EXPECT_FALSE(sc.skipped);
  for (std::size_t p = 0; p < params.size(); ++p) {
    std::vector<float> c(static_cast<std::size_t>(params[p].elements)), gg(c.size());
    if (params[p].trainable) {
      cpu->read_grad(p, c);
      gpu->read_grad(p, gg);
      // Relative to the gradient's scale: fp32 summation orders differ between backends.
      double scale = 0;
      for (float v : c) scale = std::max(scale, static_cast<double>(std::fabs(v)));
      expect_close(gg, c, tol.grad_rel * scale + 1e-6, tol.grad_rtol, params[p].name + " gradient");
    }
    cpu->read_param(p, c);
    gpu->read_param(p, gg);
    expect_close(gg, c, tol.weight_atol, tol.weight_rtol, params[p].name + " after the step");
  }
}

TEST(CudaExecutor, TrainingStepMatchesCpuNchw) {
  KILN_REQUIRE_GPU();
  compare_step(Layout::nchw, false, 8);
}

TEST(CudaExecutor, TrainingStepMatchesCpuNhwc) {
  KILN_REQUIRE_GPU();
  compare_step(Layout::nhwc, false, 8);
}

TEST(CudaExecutor, ResidentPipelineAndShortBatch) {
  KILN_REQUIRE_GPU();
  compare_step(Layout::nchw, true, 5);  // a short batch compiles its own conv plans
  compare_step(Layout::nhwc, true, 8);
}

// Evaluation logits of one batch staged from the host and gathered from a resident copy.
std::vector<float> eval_logits(detail::Executor& ex, const Batch& b, std::int64_t n, std::uint64_t key) {
  detail::HostBatch hb{n, b.images.data(), b.labels.data(), nullptr, key, b.indices.data()};
  detail::InputTransform t;
  t.mean = {0.5f, 0.4f, 0.3f};
  t.inv_std = {4.0f, 5.0f, 6.0f};
  ex.stage(hb, t);
  ex.forward(false, 1);
  std::vector<float> logits(static_cast<std::size_t>(n * 10));
  ex.read_logits(logits);
  return logits;
}

// Defect: resident copies were kept by the Dataset's address, so new contents at the same
// address (a dataset reloaded into the same object) were gathered from the stale copy.
TEST(CudaExecutor, ResidentCopyFollowsTheContentsNotTheAddress) {
  KILN_REQUIRE_GPU();
  Graph g = mixed_net();
  const std::int64_t n = 8;
  detail::CudaOptions o;
  o.pipeline = detail::CudaOptions::Pipeline::resident;
  auto gpu = detail::make_cuda_executor(g, n, o);
  detail::init_params(*gpu, 3);
  Batch b = make_batch(g, n);
  const std::uint64_t first = gpu->make_resident(b.data);
  ASSERT_NE(first, 0u);
  EXPECT_EQ(gpu->make_resident(b.data), first) << "the same contents are not uploaded again";
  // New pixels in the same Dataset object; the host batch is rebuilt from them.
  for (auto& p : b.data.images) p = static_cast<std::uint8_t>(255 - p);
  b.images.clear();
  for (std::int64_t record : b.indices) b.images.insert(b.images.end(), b.data.image(record), b.data.image(record) + g.input_shape().elements());
  const std::uint64_t second = gpu->make_resident(b.data);
  ASSERT_NE(second, 0u);
  EXPECT_NE(second, first);
  const std::vector<float> uploaded = eval_logits(*gpu, b, n, 0);
  const std::vector<float> gathered = eval_logits(*gpu, b, n, second);
  EXPECT_EQ(gathered, uploaded) << "the gather read another copy than the one holding these contents";
}

TEST(CudaExecutor, WeightsRoundTripInBothLayouts) {
  KILN_REQUIRE_GPU();
  Graph g = mixed_net();
  for (Layout layout : {Layout::nchw, Layout::nhwc}) {
    detail::CudaOptions o;
    o.layout = layout;
    auto gpu = detail::make_cuda_executor(g, 4, o);
    std::vector<float> w(static_cast<std::size_t>(g.params()[0].elements)), back(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i);
    gpu->write_param(0, w);
    gpu->read_param(0, back);
    EXPECT_EQ(w, back);
  }
}

// Mixed precision: each CUDA kernel in bf16/fp16 against the CPU oracle of the same dtype,
// through a whole step (NHWC, their default on CUDA, and NCHW). In fp16 the loss gradient is
// scaled by 65536 on both, and the gradients read back are the scaled ones.
TEST(CudaExecutor, TrainingStepMatchesCpuInBf16) {
  KILN_REQUIRE_GPU();
  compare_step(Layout::nhwc, false, 8, DType::bf16);
  compare_step(Layout::nchw, true, 8, DType::bf16);
}

TEST(CudaExecutor, TrainingStepMatchesCpuInFp16) {
  KILN_REQUIRE_GPU();
  compare_step(Layout::nhwc, true, 8, DType::f16);
  compare_step(Layout::nchw, false, 5, DType::f16);
}

// fp16's loss scale lives on the device: a scale so large that the scaled gradients overflow
// fp16 skips the update (weights unchanged, not a divergence) and halves the scale, on the
// GPU as on the CPU; the scale reads back and writes (resume) exactly.
TEST(CudaExecutor, Fp16OverflowSkipsTheStepAndHalvesTheScale) {
  KILN_REQUIRE_GPU();
  Graph g = mixed_net();
  const std::int64_t n = 8;
  auto cpu = detail::make_cpu_executor(g, n, 2, Layout::nchw, CpuConv::automatic, DType::f16);
  detail::CudaOptions o;
  o.layout = Layout::nhwc;
  o.dtype = DType::f16;
  auto gpu = detail::make_cuda_executor(g, n, o);
  EXPECT_EQ(gpu->loss_scale().scale, detail::LossScale::kInitial);
  detail::init_params(*cpu, 9);
  auto params = g.params();
  std::vector<std::vector<float>> before;
  for (std::size_t p = 0; p < params.size(); ++p) {
    std::vector<float> v(static_cast<std::size_t>(params[p].elements));
    cpu->read_param(p, v);
    gpu->write_param(p, v);
    before.push_back(v);
  }
  const detail::LossScale huge{1099511627776.0f, 17};  // 2^40: every scaled gradient is inf in fp16
  Batch b = make_batch(g, n);
  detail::HostBatch hb{n, b.images.data(), b.labels.data(), b.augment.data(), 0, b.indices.data()};
  detail::InputTransform t;
  t.mean = {0.5f, 0.4f, 0.3f};
  t.inv_std = {4.0f, 5.0f, 6.0f};
  std::vector<math::SgdHyper> hyper(params.size(), math::SgdHyper{0.05f, 0.9f, 5e-4f, 0.0f, true});
  for (auto* ex : {cpu.get(), gpu.get()}) {
    ex->set_loss_scale(huge);
    ex->stage(hb, t);
    ex->forward(true, 3);
    ex->loss({0.0f, false}, true, 1);
    ex->backward(3);
    ex->update(hyper);
  }
  for (auto* ex : {cpu.get(), gpu.get()}) {
    const auto stats = ex->take_stats(true);
    ASSERT_EQ(stats.size(), 1u);
    EXPECT_TRUE(stats[0].skipped);
    EXPECT_FALSE(stats[0].nonfinite_grad);
    EXPECT_EQ(stats[0].loss_scale, huge.scale);
    const detail::LossScale after = ex->loss_scale();
    EXPECT_EQ(after.scale, huge.scale / 2);
    EXPECT_EQ(after.good_steps, 0);
  }
  for (std::size_t p = 0; p < params.size(); ++p) {
    if (!params[p].trainable) continue;  // batchnorm's running statistics move in any training forward
    std::vector<float> w(static_cast<std::size_t>(params[p].elements));
    gpu->read_param(p, w);
    EXPECT_EQ(w, before[p]) << params[p].name << " changed on a skipped step";
  }
  // A good step counts toward growth, exactly as the CPU's.
  gpu->set_loss_scale({1024.0f, 5});
  gpu->stage(hb, t);
  gpu->forward(true, 4);
  gpu->loss({0.0f, false}, true, 2);
  gpu->backward(4);
  gpu->update(hyper);
  const auto stats = gpu->take_stats(true);
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_FALSE(stats[0].skipped);
  EXPECT_EQ(stats[0].loss_scale, 1024.0f);
  EXPECT_EQ(gpu->loss_scale().scale, 1024.0f);
  EXPECT_EQ(gpu->loss_scale().good_steps, 6);
}

// A short run in each half dtype follows the CPU oracle's losses step by step.
TEST(CudaExecutor, ShortMixedPrecisionRunTracksTheCpu) {
  KILN_REQUIRE_GPU();
  Cifar10 data = make_synthetic_cifar10({512, 128, 1});
  data.train.source = data.test.source = "synthetic";
  Graph g = load_spec(std::string(KILN_SOURCE_DIR) + "/data/models/cifar_quick.yaml").graph;
  for (DType dtype : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(std::string(to_string(dtype)));
    TrainConfig c;
    c.epochs = 1;
    c.batch = 64;
    c.lr = 0.01;
    c.augment = Augment{4, 0, true};
    c.dtype = dtype;
    std::vector<double> losses[2];
    std::vector<bool> skipped[2];  // fp16: an overflow at the initial scale skips a step on both
    for (int device = 0; device < 2; ++device) {
      RunOptions run;
      run.device = device ? Backend::cuda : Backend::cpu;
      run.threads = 2;
      Trainer t(g, c, run);
      t.on_step([&](const StepEvent& e) {
        losses[device].push_back(e.loss);
        skipped[device].push_back(e.skipped);
      });
      TrainResult r = t.fit(data);
      EXPECT_EQ(r.steps, 8);
    }
    ASSERT_EQ(losses[0].size(), losses[1].size());
    EXPECT_EQ(skipped[1], skipped[0]);
    const double tol = dtype == DType::bf16 ? 2e-2 : 5e-3;
    for (std::size_t i = 0; i < losses[0].size(); ++i)
      EXPECT_NEAR(losses[1][i], losses[0][i], tol + tol * losses[0][i]) << "step " << i + 1;
  }
}

TEST(CudaExecutor, ShortTrainingRunTracksTheCpu) {
  KILN_REQUIRE_GPU();
  Cifar10 data = make_synthetic_cifar10({512, 128, 1});
  data.train.source = data.test.source = "synthetic";
  Graph g = load_spec(std::string(KILN_SOURCE_DIR) + "/data/models/cifar_quick.yaml").graph;
  TrainConfig c;
  c.epochs = 1;
  c.batch = 64;
  c.lr = 0.01;
  c.augment = Augment{4, 0, true};
  std::vector<double> losses[2];
  for (int device = 0; device < 2; ++device) {
    RunOptions run;
    run.device = device ? Backend::cuda : Backend::cpu;
    run.threads = 2;
    Trainer t(g, c, run);
    t.on_step([&](const StepEvent& e) { losses[device].push_back(e.loss); });
    TrainResult r = t.fit(data);
    EXPECT_EQ(r.steps, 8);
  }
  ASSERT_EQ(losses[0].size(), losses[1].size());
  for (std::size_t i = 0; i < losses[0].size(); ++i) EXPECT_NEAR(losses[1][i], losses[0][i], 2e-3 + 2e-3 * losses[0][i]) << "step " << i + 1;
}

// Runs `steps` training steps on `ex` from weights seeded 9: staged from device memory,
// each step with its own step number (dropout masks) and learning rate, every third one a
// short batch; returns each step's loss sum and the weights after the last.
struct Trajectory {
  std::vector<double> losses;
  std::vector<std::vector<float>> weights;
  std::vector<std::string> details;  // per layer: what ran it (layer_times' detail)
};
Trajectory run_steps(const Graph& g, const detail::CudaOptions& o, int steps) {
  const std::int64_t capacity = 8, short_n = 5;
  detail::CudaOptions with = o;
  with.batch_sizes = {short_n};
  auto ex = detail::make_cuda_executor(g, capacity, with);
  auto cpu = detail::make_cpu_executor(g, capacity, 1, Layout::nchw, CpuConv::automatic, DType::f32);
  seed_weights(g, *cpu, *ex);
  auto params = g.params();
  Batch b = make_batch(g, capacity);
  const std::uint64_t key = ex->make_resident(b.data);
  detail::InputTransform t;
  t.pad = math::PadMode::reflect;
  t.mean = {0.5f, 0.4f, 0.3f};
  t.inv_std = {4.0f, 5.0f, 6.0f};
  Trajectory out;
  std::vector<detail::StepStats> stats;
  for (int s = 1; s <= steps; ++s) {
    const std::int64_t n = s % 3 == 0 ? short_n : capacity;
    detail::HostBatch hb{n, b.images.data(), b.labels.data(), b.augment.data(), key, b.indices.data()};
    std::vector<math::SgdHyper> hyper(params.size(), math::SgdHyper{0.02f * static_cast<float>(s), 0.9f, 5e-4f, 0.0f, true});
    ex->stage(hb, t);
    ex->forward(true, static_cast<std::uint64_t>(100 + s));
    ex->loss({0.1f, false}, true, s);
    ex->backward(static_cast<std::uint64_t>(100 + s));
    ex->update(hyper);
    if (s % 4 == 0) ex->lookahead(0.8f);
    ex->collect_stats(false, stats);
  }
  ex->collect_stats(true, stats);
  for (const auto& st : stats) out.losses.push_back(st.loss_sum);
  for (std::size_t p = 0; p < params.size(); ++p) {
    out.weights.emplace_back(static_cast<std::size_t>(params[p].elements));
    ex->read_param(p, out.weights.back());
  }
  for (const auto& t : ex->layer_times()) out.details.push_back(t.detail);
  return out;
}

// The captured step against the same step run kernel by kernel: the same kernels on the same
// memory, so the same bits — including the step number and learning rate each replay reads
// from device memory, a short batch's own graph, and lookahead between replays.
TEST(CudaGraph, CapturedStepsMatchTheUncapturedOnes) {
  KILN_REQUIRE_GPU();
  Graph g = mixed_net();
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(std::string(to_string(dtype)));
    detail::CudaOptions o;
    o.layout = Layout::nhwc;
    o.dtype = dtype;
    o.cuda_graph = false;
    const Trajectory eager = run_steps(g, o, 9);
    o.cuda_graph = true;
    const Trajectory graph = run_steps(g, o, 9);
    ASSERT_EQ(graph.losses.size(), 9u);
    EXPECT_EQ(graph.losses, eager.losses);
    for (std::size_t p = 0; p < eager.weights.size(); ++p) EXPECT_EQ(graph.weights[p], eager.weights[p]) << g.params()[p].name;
  }
}

// A batchnorm and its activation as one kernel each way against the two ops: the fused
// kernels reproduce the unfused ones' roundings, so the trajectories are bitwise equal.
TEST(CudaFusion, FusedGroupsMatchTheUnfusedOps) {
  KILN_REQUIRE_GPU();
  Graph g = mixed_net();
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    for (Layout layout : {Layout::nchw, Layout::nhwc}) {
      SCOPED_TRACE(fmt::format("{}, {}", to_string(dtype), to_string(layout)));
      detail::CudaOptions o;
      o.layout = layout;
      o.dtype = dtype;
      o.fusion = false;
      const Trajectory apart = run_steps(g, o, 4);
      o.fusion = true;
      const Trajectory fused = run_steps(g, o, 4);
      EXPECT_EQ(fused.losses, apart.losses);
      for (std::size_t p = 0; p < apart.weights.size(); ++p) EXPECT_EQ(fused.weights[p], apart.weights[p]) << g.params()[p].name;
    }
  }
}

// --cudnn-fusion: a batchnorm + activation feeding a convolution applied in the convolution's
// prologue by cuDNN's fused graphs, against kiln's fused kernel and the plain convolution.
// The prologue computes in fp32 where kiln rounds the normalized value and the activation to
// bf16, so the two track each other within bf16's rounding, not bitwise.
TEST(CudaFusion, CudnnPrologueFusionTracksKilnsKernel) {
  KILN_REQUIRE_GPU();
  GraphBuilder b("chain", Shape::chw(3, 16, 16), 10);
  b.add(layers::conv(16, 3).pad(1).bias(false).named("c1"))
      .add(layers::batchnorm().named("bn1"))
      .add(layers::relu().named("r1"))
      .add(layers::conv(16, 3).pad(1).bias(false).named("c2"))
      .add(layers::batchnorm().named("bn2"))
      .add(layers::gelu().named("g2"))
      .add(layers::conv(16, 3).pad(1).named("c3"))
      .add(layers::global_avgpool())
      .add(layers::flatten())
      .add(layers::linear(10));
  Graph g = b.build();
  detail::CudaOptions o;
  o.layout = Layout::nhwc;
  o.dtype = DType::bf16;
  const Trajectory kiln = run_steps(g, o, 4);
  o.cudnn_fusion = true;
  const Trajectory cudnn = run_steps(g, o, 4);
  // bn1+r1 -> c2 is cuDNN's documented ConvBNfprop pattern (ReLU): it must run on cuDNN; a
  // GELU prologue (c3) may have no engine, and then kiln's kernel runs it.
  EXPECT_EQ(cudnn.details[static_cast<std::size_t>(g.find("c2")->index)].rfind("cuDNN fused", 0), 0u)
      << "c2: " << cudnn.details[static_cast<std::size_t>(g.find("c2")->index)]
      << " (kiln check --target cuda --dtype bf16 on this GPU names cuDNN's reason)";
  if (const std::string& c3 = cudnn.details[static_cast<std::size_t>(g.find("c3")->index)]; c3.rfind("cuDNN fused", 0) != 0)
    std::cout << "[  NOTE    ] c3's gelu prologue ran on kiln's kernel: " << c3 << "\n";
  ASSERT_EQ(cudnn.losses.size(), kiln.losses.size());
  for (std::size_t i = 0; i < kiln.losses.size(); ++i)
    EXPECT_NEAR(cudnn.losses[i], kiln.losses[i], 3e-2 * std::fabs(kiln.losses[i]) + 1e-2) << "step " << i + 1;
  for (std::size_t p = 0; p < kiln.weights.size(); ++p) expect_close(cudnn.weights[p], kiln.weights[p], 5e-3, 2e-2, g.params()[p].name);
}

// Checked before the device is touched, so it runs without a GPU too.
TEST(CudaExecutor, BatchSizesOutsideTheCapacityAreAUsageError) {
  Graph g = mixed_net();
  detail::CudaOptions o;
  o.batch_sizes = {3, 9};
  try {
    detail::make_cuda_executor(g, 8, o);
    FAIL() << "expected a UsageError";
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "CUDA plan batch sizes: 9 is outside 1..8 (the plan's capacity)");
  }
}

TEST(CudaExecutor, OutOfMemoryIsAClearError) {
  KILN_REQUIRE_GPU();
  Graph g = load_spec(std::string(KILN_SOURCE_DIR) + "/data/models/airbench.yaml").graph;
  try {
    detail::make_cuda_executor(g, std::int64_t{1} << 24, {});  // 16M images: terabytes
    FAIL() << "expected a DeviceError";
  } catch (const DeviceError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("out of device memory"), std::string::npos) << m;
    EXPECT_NE(m.find("largest batch that would fit"), std::string::npos) << m;
    EXPECT_EQ(e.exit_code(), ExitCode::runtime);
  }
}

}  // namespace
}  // namespace kiln::test
