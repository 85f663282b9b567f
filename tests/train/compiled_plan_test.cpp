// The compiled-plan layer: its training step is the executor's sequence and nothing else, its
// evaluation is the public Plan's, and run options are checked in one place.
#include <gtest/gtest.h>

#include <functional>
#include <optional>
#include <thread>

#include "data/loader.hpp"
#include "kiln/kiln.hpp"
#include "math/rng.hpp"
#include "plan/compiled_plan.hpp"
#include "plan/evaluation.hpp"
#include "plan/init.hpp"
#include "plan/options.hpp"
#include "test_models.hpp"
#include "test_util.hpp"
#include "train/optimizer.hpp"

namespace kiln::test {
namespace {

detail::PlanSpec spec_of(const TrainConfig& c) {
  detail::PlanSpec spec;
  spec.batch = c.batch;
  spec.execution.threads = 1;
  spec.input = {c.mean, c.std, math::PadMode::reflect};
  spec.seed = c.seed;
  return spec;
}

std::vector<float> param(const detail::Executor& ex, const Graph& g, std::size_t i) {
  std::vector<float> v(static_cast<std::size_t>(g.params()[i].elements));
  ex.read_param(i, v);
  return v;
}

std::vector<float> param(const detail::CompiledPlan& plan, std::size_t i) {
  std::vector<float> v(static_cast<std::size_t>(plan.graph().params()[i].elements));
  plan.read_param(i, v);
  return v;
}

// train_step is stage, forward, loss, backward, update with the dropout key (seed, step)
// and the stats tagged step + 1: the same weights and stats as those calls made by hand.
TEST(CompiledPlan, TrainStepIsTheExecutorSequence) {
  const Graph g = dropout_bn_net();
  TrainConfig c;
  c.batch = 16;
  c.seed = 3;
  c.lr = 0.05;
  c.label_smoothing = 0.1;
  c.augment = Augment{0, 2, true};
  auto plan = detail::compile_plan(g, spec_of(c));
  auto ex = detail::make_cpu_executor(g, c.batch, 1);
  detail::init_params(*ex, c.seed);
  const detail::InputTransform t = detail::make_input_transform(g, c.mean, c.std, math::PadMode::reflect);

  Cifar10 data = make_synthetic_cifar10({64, 0, 2});
  detail::LoaderOptions lo;
  lo.batch = c.batch;
  lo.seed = c.seed;
  lo.augment.enabled = true;
  lo.augment.pad = math::PadMode::reflect;
  lo.augment.max_shift = 2;
  lo.augment.flip = true;
  detail::Loader loader(data.train, lo);
  loader.start_epoch(0);
  const detail::LossOptions loss{0.1f, false};
  const auto hyper = detail::sgd_hyper(g, c, 1.0, 0);
  detail::HostBatch batch;
  std::int64_t step = 0;
  while (loader.next(batch)) {
    plan->train_step(batch, hyper, step, loss);
    const std::uint64_t key = math::stream_key(c.seed, static_cast<std::uint64_t>(step));
    ex->stage(batch, t);
    ex->forward(true, key);
    ex->loss(loss, true, step + 1);
    ex->backward(key);
    ex->update(hyper);
    ++step;
  }
  ASSERT_EQ(step, 4);
  const auto by_plan = plan->take_stats(true);
  const auto by_hand = ex->take_stats(true);
  ASSERT_EQ(by_plan.size(), 4u);
  ASSERT_EQ(by_hand.size(), 4u);
  for (std::size_t s = 0; s < 4; ++s) {
    EXPECT_EQ(by_plan[s].tag, static_cast<std::int64_t>(s) + 1);
    EXPECT_EQ(by_plan[s].tag, by_hand[s].tag);
    EXPECT_EQ(by_plan[s].loss_sum, by_hand[s].loss_sum) << "step " << s + 1;
    EXPECT_EQ(by_plan[s].correct, by_hand[s].correct);
  }
  for (std::size_t i = 0; i < g.params().size(); ++i) EXPECT_EQ(param(*plan, i), param(*ex, g, i)) << g.params()[i].name;
}

// compile_plan initializes as the Trainer and kiln::compile do, and its evaluation is the
// public Plan's.
TEST(CompiledPlan, EvaluationMatchesThePublicPlan) {
  const Graph g = dropout_bn_net();
  TrainConfig c;
  c.batch = 32;
  c.seed = 9;
  auto plan = detail::compile_plan(g, spec_of(c));
  CompileOptions o;
  o.threads = 1;
  o.seed = 9;
  Plan pub = compile(g, {Backend::cpu, 32}, o);
  const Cifar10 data = make_synthetic_cifar10({0, 70, 4});
  const Evaluation a = detail::evaluate(*plan, data.test, {});
  const Evaluation b = pub.evaluate(data.test);
  EXPECT_EQ(a.count, 70);
  EXPECT_EQ(a.accuracy, b.accuracy);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.confusion, b.confusion);
  for (std::size_t i = 0; i < g.params().size(); ++i) EXPECT_EQ(param(*plan, i), pub.read_param(i)) << g.params()[i].name;
}

std::string usage_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "(no UsageError)";
}

TEST(ExecutionOptions, BadValuesAreRefusedWithOneMessageWhicheverWayIn) {
  RunOptions run;
  run.dtype = DType::f16;
  EXPECT_EQ(usage_message([&] { detail::resolve_options(run); }), "(no UsageError)");  // the CPU emulates it
  run.dtype = static_cast<DType>(9);
  EXPECT_EQ(usage_message([&] { detail::resolve_options(run); }), "--dtype must be fp32, fp16 or bf16, got 9");
  EXPECT_EQ(usage_message([&] { detail::resolve_options(Target{Backend::cpu, 4, DType::f32, Layout::nhwc}, {}); }),
            "(no UsageError)");  // the CPU runs NHWC too
  BenchOptions bench;
  bench.dtype = static_cast<DType>(9);
  EXPECT_EQ(usage_message([&] { detail::resolve_options(bench); }), "--dtype must be fp32, fp16 or bf16, got 9");

  RunOptions threads;
  threads.threads = -2;
  EXPECT_EQ(usage_message([&] { detail::resolve_options(threads); }), "threads must be 0 (every core) or more, got -2");
  CompileOptions compile_threads;
  compile_threads.threads = -2;
  EXPECT_EQ(usage_message([&] { detail::resolve_options(Target{}, compile_threads); }),
            "threads must be 0 (every core) or more, got -2");
  RunOptions workspace;
  workspace.workspace_limit = -5;
  EXPECT_EQ(usage_message([&] { detail::resolve_options(workspace); }),
            "the cuDNN workspace limit must be a number of bytes or -1 (no limit), got -5");
  RunOptions device;
  device.device_index = -1;
  EXPECT_EQ(usage_message([&] { detail::resolve_options(device); }), "the CUDA device index must not be negative, got -1");
  RunOptions pipeline;
  pipeline.pipeline = static_cast<Pipeline>(7);
  EXPECT_EQ(usage_message([&] { detail::resolve_options(pipeline); }), "--pipeline must be auto, resident or stream, got 7");
  // The Trainer checks them before it builds anything.
  EXPECT_EQ(usage_message([&] { Trainer(dropout_bn_net(), TrainConfig{}, threads); }),
            "threads must be 0 (every core) or more, got -2");
  detail::PlanSpec empty;
  EXPECT_EQ(usage_message([&] { detail::compile_plan(dropout_bn_net(), empty); }),
            "normalization has 0 mean and 0 std values but model 'small' has 3 input channels");
  empty.input = {TrainConfig{}.mean, TrainConfig{}.std};
  EXPECT_EQ(usage_message([&] { detail::compile_plan(dropout_bn_net(), empty); }), "the batch size must be at least 1, got 0");
}

TEST(ExecutionOptions, TypedValuesReachTheBackend) {
  RunOptions run;
  run.device = Backend::cuda;
  run.layout = Layout::nhwc;
  run.workspace_limit = 1 << 20;
  run.autotune = true;
  run.pipeline = Pipeline::stream;
  run.device_index = 1;
  const detail::ExecutionOptions o = detail::resolve_options(run);
  EXPECT_EQ(o.backend, Backend::cuda);
  EXPECT_EQ(o.cuda.layout, Layout::nhwc);
  EXPECT_EQ(o.cuda.workspace_limit, 1 << 20);
  EXPECT_TRUE(o.cuda.autotune);
  EXPECT_EQ(o.cuda.pipeline, detail::CudaOptions::Pipeline::stream);
  EXPECT_EQ(o.cuda.device, 1);
  run.pipeline = Pipeline::resident;
  EXPECT_EQ(detail::resolve_options(run).cuda.pipeline, detail::CudaOptions::Pipeline::resident);
  run.pipeline = Pipeline::automatic;
  EXPECT_EQ(detail::resolve_options(run).cuda.pipeline, detail::CudaOptions::Pipeline::automatic);

  RunOptions cpu;
  cpu.threads = 3;
  EXPECT_EQ(detail::resolve_options(cpu).threads, 3);
  cpu.threads = 0;  // every core
  const unsigned cores = std::thread::hardware_concurrency();
  EXPECT_EQ(detail::resolve_options(cpu).threads, cores > 0 ? static_cast<int>(cores) : 1);

  for (Pipeline p : {Pipeline::automatic, Pipeline::resident, Pipeline::stream}) EXPECT_EQ(parse_pipeline(to_string(p)), p);
  EXPECT_EQ(to_string(Pipeline::automatic), "auto");
  EXPECT_EQ(parse_pipeline("fast"), std::nullopt);
}

// fp32 means fp32 and results are deterministic unless asked; TF32 only means something for
// fp32, and every way in (RunOptions, CompileOptions, BenchOptions) says the same.
TEST(ExecutionOptions, Tf32AndDeterminismDefaultsAndFlags) {
  RunOptions run;
  run.device = Backend::cuda;
  detail::ExecutionOptions o = detail::resolve_options(run);
  EXPECT_FALSE(o.cuda.tf32);
  EXPECT_TRUE(o.cuda.deterministic);
  run.tf32 = true;
  run.nondeterministic = true;
  o = detail::resolve_options(run);
  EXPECT_TRUE(o.cuda.tf32);
  EXPECT_FALSE(o.cuda.deterministic);
  run.dtype = DType::bf16;
  EXPECT_FALSE(detail::resolve_options(run).cuda.tf32) << "bf16 uses tensor cores anyway: tf32 is ignored";

  CompileOptions compile;
  compile.tf32 = true;
  compile.nondeterministic = true;
  o = detail::resolve_options(Target{Backend::cuda, 4, DType::f32, Layout::nchw}, compile);
  EXPECT_TRUE(o.cuda.tf32);
  EXPECT_FALSE(o.cuda.deterministic);

  BenchOptions bench;
  bench.device = Backend::cuda;
  EXPECT_FALSE(detail::resolve_options(bench).cuda.tf32);
  EXPECT_TRUE(detail::resolve_options(bench).cuda.deterministic);
  bench.tf32 = true;
  bench.nondeterministic = true;
  EXPECT_TRUE(detail::resolve_options(bench).cuda.tf32);
  EXPECT_FALSE(detail::resolve_options(bench).cuda.deterministic);

  RunOptions cpu;  // accepted on the CPU, which has nothing to act on
  cpu.tf32 = true;
  cpu.nondeterministic = true;
  EXPECT_NO_THROW(detail::resolve_options(cpu));
}


// A CPU executor that records which short batches it was asked to prepare, and the sizes
// of the batches it then stages: every short batch must be declared before it is staged
// (on CUDA, so that its cuDNN plans are not built in the middle of an epoch).
class RecordingExecutor final : public detail::Executor {
 public:
  RecordingExecutor(const Graph& g, std::int64_t batch) : inner_(detail::make_cpu_executor(g, batch, 1)) {}
  std::vector<std::int64_t> prepared, staged_before_prepared;

  const Graph& graph() const override { return inner_->graph(); }
  std::int64_t capacity() const override { return inner_->capacity(); }
  const MemoryPlan& memory() const override { return inner_->memory(); }
  void prepare_batches(std::span<const std::int64_t> sizes) override { prepared.insert(prepared.end(), sizes.begin(), sizes.end()); }
  void stage(const detail::HostBatch& b, const detail::InputTransform& t) override {
    if (b.n < capacity() && std::find(prepared.begin(), prepared.end(), b.n) == prepared.end()) staged_before_prepared.push_back(b.n);
    inner_->stage(b, t);
  }
  void forward(bool train, std::uint64_t step) override { inner_->forward(train, step); }
  void loss(const detail::LossOptions& o, bool train, std::int64_t tag) override { inner_->loss(o, train, tag); }
  void backward(std::uint64_t step) override { inner_->backward(step); }
  void update(std::span<const math::SgdHyper> hyper) override { inner_->update(hyper); }
  void collect_stats(bool wait, std::vector<detail::StepStats>& out) override { inner_->collect_stats(wait, out); }
  void read_logits(std::span<float> out) const override { inner_->read_logits(out); }
  void read_param(std::size_t i, std::span<float> out) const override { inner_->read_param(i, out); }
  void write_param(std::size_t i, std::span<const float> in) override { inner_->write_param(i, in); }
  void read_momentum(std::size_t i, std::span<float> out) const override { inner_->read_momentum(i, out); }
  void write_momentum(std::size_t i, std::span<const float> in) override { inner_->write_momentum(i, in); }
  void read_grad(std::size_t i, std::span<float> out) const override { inner_->read_grad(i, out); }
  void lookahead_init() override { inner_->lookahead_init(); }
  void lookahead(float decay) override { inner_->lookahead(decay); }
  void read_ema(std::size_t i, std::span<float> out) const override { inner_->read_ema(i, out); }
  void write_ema(std::size_t i, std::span<const float> in) override { inner_->write_ema(i, in); }
  void set_profiling(bool on) override { inner_->set_profiling(on); }
  std::vector<detail::LayerTime> layer_times() const override { return inner_->layer_times(); }
  std::string describe() const override { return inner_->describe(); }

 private:
  std::unique_ptr<detail::Executor> inner_;
};

TEST(CompiledPlan, ShortLastBatchesArePreparedBeforeTheyRun) {
  const Graph g = dropout_bn_net();
  TrainConfig c;
  c.batch = 16;
  auto recording = std::make_unique<RecordingExecutor>(g, 16);
  RecordingExecutor& rec = *recording;
  detail::CompiledPlan plan(std::move(recording), spec_of(c), detail::make_input_transform(g, c.mean, c.std, math::PadMode::zero));
  Cifar10 data = make_synthetic_cifar10({16, 21, 2});  // 21 test images: batches of 16 and 5
  detail::evaluate(plan, data.test, {});
  plan.predict(data.test.images.data(), 11);  // one batch of 11
  EXPECT_EQ(rec.prepared, (std::vector<std::int64_t>{5, 11}));
  EXPECT_TRUE(rec.staged_before_prepared.empty()) << rec.staged_before_prepared.front();
  plan.prepare_remainder(32, 16);  // no short batch
  EXPECT_EQ(rec.prepared.size(), 2u);
}

}  // namespace
}  // namespace kiln::test
