// The training loop: epochs of batches from the loader through the compiled plan, the schedule
// and the optimizer, evaluation after each epoch, metrics and checkpoints. Everything that
// decides a run's numbers is a function of (seed, step), so a resumed run continues exactly.
#include <atomic>
#include <chrono>
#include <algorithm>
#include <deque>
#include <optional>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>

#include "data/loader.hpp"
#include "kiln/checkpoint.hpp"
#include "kiln/cudnn.hpp"
#include "kiln/train.hpp"
#include "plan/compiled_plan.hpp"
#include "plan/evaluation.hpp"
#include "plan/weights.hpp"
#include "train/init.hpp"
#include "train/metrics.hpp"
#include "train/optimizer.hpp"
#include "train/state.hpp"
#include "trace/trace.hpp"
#include "trace/trace.hpp"

namespace kiln {

using Clock = std::chrono::steady_clock;

namespace {

// The plan a recipe trains: its batch, normalization, augmentation padding and seed.
detail::PlanSpec plan_spec(const TrainConfig& config, const RunOptions& run) {
  detail::PlanSpec spec;
  spec.batch = config.batch;
  RunOptions execution = run;
  execution.tf32 = run.tf32 || config.tf32;  // the recipe's `tf32: true` or --tf32
  execution.dtype = config.dtype.value_or(run.dtype);
  spec.execution = detail::resolve_options(execution);
  spec.input = {config.mean, config.std, config.augment.translate > 0 ? math::PadMode::reflect : math::PadMode::zero};
  spec.seed = config.seed;
  return spec;
}

bool next_batch(detail::Loader& loader, detail::HostBatch& batch) {
  trace::Range range("data/fetch");
  return loader.next(batch);
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace

struct Trainer::Impl {
  Graph graph;
  TrainConfig config;
  RunOptions run;
  std::unique_ptr<detail::CompiledPlan> plan;
  std::function<void(const StepEvent&)> step_callback;
  std::function<void(const EpochEvent&)> epoch_callback;
  std::atomic<bool> stop{false};
  detail::RunPosition position;
  bool fresh = true;             // initialized here, not from --init or --resume: data-dependent init still due
  std::int64_t saved_epoch = -1;  // the epoch after which the last training state was written
  std::optional<double> best_accuracy;  // the best validation (or, without a split, test) accuracy after an epoch so far: best.safetensors's

  Impl(Graph g, TrainConfig c, RunOptions r) : graph(std::move(g)), config(std::move(c)), run(std::move(r)) {
    plan = detail::compile_plan(graph, plan_spec(config, run));
    if (plan->dtype() == DType::f16) {
      if (!(config.loss_scale >= 1 && config.loss_scale <= 1e30))
        throw UsageError(fmt::format("loss_scale must be a number from 1 to 1e30, got {}", config.loss_scale));
      plan->set_loss_scale({static_cast<float>(config.loss_scale), 0});
    }
    if (config.lookahead.every > 0) plan->lookahead_init();
    if (!run.init.empty()) load_weights(run.init), fresh = false;
    if (!run.resume.empty()) {
      std::string path = (std::filesystem::path(run.resume) / "train_state.safetensors").string();
      position = detail::load_train_state(path, *plan, config.seed, config.batch, config.lookahead.every > 0);
      fresh = false;
      saved_epoch = position.epoch;
    }
  }

  void load_weights(const std::string& path) {
    detail::load_weights_file(*plan, read_safetensors(path), path);
    if (config.lookahead.every > 0) plan->lookahead_init();
  }

  detail::LoaderOptions loader_options(bool training) const {
    detail::LoaderOptions o;
    o.batch = config.batch;
    o.seed = config.seed;
    o.shuffle = training && config.shuffle;
    o.drop_last = training && config.drop_last;
    if (training && config.augment.enabled()) {
      o.augment.enabled = true;
      o.augment.pad = config.augment.translate > 0 ? math::PadMode::reflect : math::PadMode::zero;
      o.augment.max_shift = config.augment.translate > 0 ? config.augment.translate : config.augment.crop;
      o.augment.flip = config.augment.flip;
      o.augment.alternate_flip = config.augment.alternate_flip;
    }
    return o;
  }

  Evaluation evaluate(const Dataset& data) {
    return detail::evaluate(*plan, data, {config.tta, static_cast<float>(config.label_smoothing)});
  }

  void save_checkpoint(bool final_weights) {
    if (run.out.empty()) return;
    std::filesystem::create_directories(run.out);
    detail::save_train_state((std::filesystem::path(run.out) / "train_state.safetensors").string(), *plan, position,
                             config.seed, config.batch, config.lookahead.every > 0);
    saved_epoch = position.epoch;
    if (final_weights)
      write_safetensors((std::filesystem::path(run.out) / "model.safetensors").string(),
                        detail::weights_file(*plan, position.step));
  }

  // OUT/best.safetensors: the weights of the epoch with the best test accuracy so far (the
  // first of equals), chosen on the test set until kiln has a validation split. Written
  // before the training state, so a kill between the two leaves a best that the resumed run
  // recomputes.
  void keep_if_best(double accuracy) {
    if (run.out.empty() || (best_accuracy && accuracy <= *best_accuracy)) return;
    best_accuracy = accuracy;
    write_safetensors((std::filesystem::path(run.out) / "best.safetensors").string(), detail::weights_file(*plan, position.step));
  }

  [[noreturn]] void diverged(double loss, bool grads, std::int64_t step, std::int64_t epoch, double lr) {
    // Where it broke: the first layer, in forward order, holding a non-finite weight, else a
    // non-finite gradient.
    std::string where = "the logits (every weight and gradient is finite)";
    auto params = graph.params();
    for (int pass = 0; pass < 2 && where.front() == 't'; ++pass)
      for (std::size_t p = 0; p < params.size(); ++p) {
        std::vector<float> v(static_cast<std::size_t>(params[p].elements));
        if (pass == 0) plan->read_param(p, v);
        else if (params[p].trainable) plan->read_grad(p, v);
        else continue;
        if (std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); })) continue;
        const Layer& layer = graph.layers()[static_cast<std::size_t>(params[p].layer)];
        where = fmt::format("layer '{}' ({}{})", layer.name, params[p].name, pass == 0 ? "" : " gradient");
        break;
      }
    std::string what = std::isfinite(loss) ? "the gradients hold NaN or Inf values" : fmt::format("the loss is {}", std::isnan(loss) ? "NaN" : loss > 0 ? "+Inf" : "-Inf");
    if (!std::isfinite(loss) && grads) what += " and the gradients hold NaN or Inf values";
    std::string kept = run.out.empty() ? "no checkpoint was being written (no --out)"
                       : saved_epoch < 0
                           ? "no training state was written yet"
                           : fmt::format("the last good training state is {}/train_state.safetensors (after epoch {})", run.out,
                                         saved_epoch);
    throw DivergenceError(fmt::format("training diverged at step {} (epoch {}): {}; the first non-finite values are in {}\n"
                                      "    {}\n    hint: lower the learning rate (lr was {:.6g}): start a new run with e.g. --lr {:.6g}",
                                      step, epoch + 1, what, where, kept, lr, config.lr / 10));
  }

  TrainResult fit(const Cifar10& data) {
    check_dataset(graph, data.train);
    if (data.test.size() > 0) check_dataset(graph, data.test);  // an image folder of one level has none
    const bool validate = data.val.size() > 0;
    if (validate) check_dataset(graph, data.val);
    if (fresh) {
      detail::init_whitening(*plan, data.train, config.whiten_images, config.whiten_eps);
      if (config.lookahead.every > 0) plan->lookahead_init();
      fresh = false;
    }
    const std::uint64_t resident = plan->make_resident(data.train);
    if (data.test.size() > 0) plan->make_resident(data.test);  // evaluate() finds it by its contents
    if (validate) plan->make_resident(data.val);
    if (!config.drop_last) plan->prepare_remainder(data.train.size(), config.batch);
    if (run.evaluate != EvalPolicy::never) plan->prepare_remainder(data.test.size(), plan->capacity());
    const auto start = Clock::now();
    detail::LoaderOptions train_options = loader_options(true);
    train_options.resident = resident;
    detail::Loader loader(data.train, train_options);
    const std::int64_t per_epoch = loader.batches_per_epoch();
    if (per_epoch == 0)
      throw DataError(data.train.source, -1,
                      fmt::format("{}: {} training records make no batch of {} (drop_last)", data.train.source, data.train.size(),
                                  config.batch));
    const auto total = static_cast<std::int64_t>(std::ceil(config.epochs * static_cast<double>(per_epoch) - 1e-9));
    const std::int64_t stop_at = run.max_steps ? std::min(total, position.step + *run.max_steps) : total;
    const detail::LossOptions loss_options{static_cast<float>(config.label_smoothing), config.sum_loss};

    std::ofstream metrics;
    if (!run.out.empty()) {
      std::filesystem::create_directories(run.out);
      const auto path = std::filesystem::path(run.out) / "metrics.jsonl";
      std::error_code same_ec;
      if (!run.resume.empty() && std::filesystem::equivalent(run.resume, run.out, same_ec))
        best_accuracy = detail::keep_metrics_until(path, position.step);
      metrics.open(path, std::ios::out | (run.resume.empty() ? std::ios::trunc : std::ios::app));
      if (!metrics) throw Error(fmt::format("cannot write {}/metrics.jsonl", run.out), ExitCode::runtime);
    }

    TrainResult result;
    double lr = 0;
    plan->take_stats(true);
    // Per-step information waits here until the step's loss arrives from the plan (a
    // device backend delivers it about a step later, so that logging never stalls it).
    struct Pending {
      std::int64_t step, epoch, batch_in_epoch;
      double lr, images_per_sec;
    };
    std::deque<Pending> pending;
    detail::StepStats epoch_stats;
    std::int64_t epoch_skipped = 0;
    const bool fp16 = plan->dtype() == DType::f16;
    auto drain = [&](bool wait) {
      for (const detail::StepStats& s : plan->take_stats(wait)) {
        Pending p = pending.front();
        pending.pop_front();
        double loss = config.sum_loss ? s.loss_sum : s.loss_sum / static_cast<double>(std::max<std::int64_t>(s.count, 1));
        if (!std::isfinite(loss) || s.nonfinite_grad) diverged(loss, s.nonfinite_grad, p.step, p.epoch, p.lr);
        if (s.skipped) ++epoch_skipped, ++result.skipped_steps;
        epoch_stats.loss_sum += s.loss_sum;
        epoch_stats.correct += s.correct;
        epoch_stats.count += s.count;
        StepEvent ev{p.step, total, p.epoch, p.batch_in_epoch, per_epoch, loss, p.lr, p.images_per_sec, s.skipped,
                     fp16 ? static_cast<double>(s.loss_scale) : 0.0};
        if (metrics) metrics << metrics_record(ev) << '\n';
        if (step_callback) step_callback(ev);
      }
    };
    const std::int64_t first_step = position.step;
    // --profile-steps: the profiler captures steps [first, last] (from 1), the queue drained
    // at both ends so the capture holds those steps' device work and no other.
    bool capturing = false;
    auto capture = [&](bool on) {
      plan->finish();
      trace::capture(on);
      capturing = on;
    };
    while (position.step < stop_at && !stop.load()) {
      trace::Range epoch_range("epoch");  // its steps, evaluation and checkpoint
      const auto epoch_start = Clock::now();
      loader.start_epoch(position.epoch, position.batch_in_epoch);
      epoch_stats = {};
      epoch_skipped = 0;
      std::int64_t seen = 0;
      detail::HostBatch batch;
      bool epoch_done = true;
      while (next_batch(loader, batch)) {
        trace::Range step_range("step");
        if (run.profile_steps && !capturing && position.step + 1 == run.profile_steps->first) capture(true);
        lr = config.lr * config.schedule.factor(position.step, total, per_epoch);
        auto hyper = detail::sgd_hyper(graph, config, config.schedule.factor(position.step, total, per_epoch), position.epoch);
        plan->train_step(batch, hyper, position.step, loss_options);
        const Lookahead& la = config.lookahead;
        if (la.every > 0 && position.step % la.every == 0)
          plan->lookahead(static_cast<float>(
              la.strength * std::pow(static_cast<double>(position.step) / static_cast<double>(total), la.power)));
        // airbench ends on the averaged weights: ema unchanged, net <- ema.
        if (la.every > 0 && position.step + 1 == total) plan->lookahead(1.0f);
        seen += batch.n;
        ++position.step;
        ++position.batch_in_epoch;
        pending.push_back({position.step, position.epoch, position.batch_in_epoch, lr,
                           static_cast<double>(seen) / std::max(seconds_since(epoch_start), 1e-9)});
        drain(false);
        if (capturing && position.step >= run.profile_steps->second) capture(false);
        if (position.step >= stop_at || stop.load()) {
          epoch_done = position.batch_in_epoch >= per_epoch;
          break;
        }
      }
      drain(true);
      EpochEvent ev;
      ev.train_seconds = seconds_since(epoch_start);
      ev.epoch = position.epoch;
      ev.step = position.step;
      ev.train_loss = epoch_stats.count ? epoch_stats.loss_sum / static_cast<double>(epoch_stats.count) : 0.0;
      ev.train_accuracy = epoch_stats.count ? static_cast<double>(epoch_stats.correct) / static_cast<double>(epoch_stats.count) : 0.0;
      ev.lr = lr;
      ev.images_per_sec = static_cast<double>(seen) / std::max(ev.train_seconds, 1e-9);
      ev.skipped_steps = epoch_skipped;
      ev.loss_scale = fp16 ? static_cast<double>(plan->loss_scale().scale) : 0.0;
      if (epoch_done) {
        ++position.epoch;
        position.batch_in_epoch = 0;
        ++result.epochs_completed;
      }
      const bool last = position.step >= stop_at || stop.load();
      const bool evaluate_now = run.evaluate == EvalPolicy::every_epoch ? (epoch_done || last) : (run.evaluate == EvalPolicy::at_end && last);
      // A stop request (Ctrl-C, SIGTERM) saves and returns at once: evaluating the test set
      // first kept a user waiting (about 20 s for cifar_quick on two cores).
      // With a validation split, it is what every epoch is judged on, and the test set is
      // evaluated once, after the last epoch.
      if (evaluate_now && validate && !stop.load()) {
        const Evaluation val = evaluate(data.val);
        ev.val_loss = val.loss;
        ev.val_accuracy = val.accuracy;
        result.val_accuracy = ev.val_accuracy;
      }
      if (evaluate_now && (!validate || last) && data.test.size() > 0 && !stop.load()) {
        const Evaluation test = evaluate(data.test);
        ev.test_loss = test.loss;
        ev.test_accuracy = test.accuracy;
        result.test_accuracy = ev.test_accuracy;
      }
      ev.elapsed_sec = seconds_since(start);
      if (metrics) {
        metrics << metrics_record(ev) << '\n';
        if (ev.val_accuracy) metrics << metrics_val_record(ev) << '\n';
        metrics.flush();
      }
      if (const std::optional<double> judged = validate ? ev.val_accuracy : ev.test_accuracy;
          judged && run.evaluate == EvalPolicy::every_epoch)
        keep_if_best(*judged);
      if (epoch_callback) epoch_callback(ev);
      save_checkpoint(last);
    }
    // A run resumed after its last training state was written but before its weights were
    // (kill -9 between the two files) has no step left: write the weights, which may be
    // missing or an earlier interruption's.
    if (capturing) capture(false);
    if (position.step == first_step) save_checkpoint(true);
    result.steps = position.step;
    result.interrupted = stop.load();
    result.seconds = seconds_since(start);
    return result;
  }
};

Trainer::Trainer(Graph graph, TrainConfig config, RunOptions run)
    : impl_(std::make_unique<Impl>(std::move(graph), std::move(config), std::move(run))) {}
Trainer::~Trainer() = default;
Trainer::Trainer(Trainer&&) noexcept = default;
Trainer& Trainer::operator=(Trainer&&) noexcept = default;

void Trainer::on_step(std::function<void(const StepEvent&)> callback) { impl_->step_callback = std::move(callback); }
void Trainer::on_epoch(std::function<void(const EpochEvent&)> callback) { impl_->epoch_callback = std::move(callback); }
TrainResult Trainer::fit(const Cifar10& data) { return impl_->fit(data); }
void Trainer::request_stop() { impl_->stop.store(true); }
Evaluation Trainer::evaluate(const Dataset& data) { return impl_->evaluate(data); }
const Graph& Trainer::graph() const { return impl_->graph; }
const TrainConfig& Trainer::config() const { return impl_->config; }

std::vector<float> Trainer::predict(const std::uint8_t* images, std::int64_t n) {
  return detail::predict(*impl_->plan, images, n, impl_->config.tta);
}

void Trainer::save_weights(const std::string& path) const {
  write_safetensors(path, detail::weights_file(*impl_->plan, impl_->position.step));
}

void Trainer::load_weights(const std::string& path) { impl_->load_weights(path); }

}  // namespace kiln
