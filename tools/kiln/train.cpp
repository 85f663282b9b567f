// kiln train: trains a model spec on CIFAR-10 (or a synthetic set), with a progress bar,
// per-epoch summaries, OUT/metrics.jsonl and checkpoints; Ctrl-C saves and exits cleanly.
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <fmt/format.h>
#include <optional>
#include <unistd.h>

#include "cli.hpp"

namespace kiln::cli {

namespace {

struct TrainOptions {
  std::string model;
  std::string data;
  std::string device = "auto";
  std::optional<double> epochs;
  std::optional<std::int64_t> steps;
  std::optional<std::int64_t> batch;
  std::optional<double> lr;
  std::optional<std::uint64_t> seed;
  std::string out;
  std::string init;
  std::string resume;
  bool overwrite = false;
  bool no_augment = false;
  bool no_shuffle = false;
  int threads = 0;
  bool json = false;
  std::string layout = "nchw";
  std::string dtype = "fp32";
  std::optional<double> workspace_mb;
  bool autotune = false;
  std::string pipeline = "auto";
  std::string eval = "epoch";
};

std::atomic<Trainer*> g_trainer{nullptr};

extern "C" void on_signal(int) {
  if (Trainer* t = g_trainer.load()) t->request_stop();
  // A second Ctrl-C ends the process at once; the last checkpoint is intact either way.
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}

std::string percent(double x) { return fmt::format("{:.2f}%", 100.0 * x); }

// A --out the run cannot write into is a usage error before any data is loaded (it was an
// internal error, exit 3, after loading all of it): the folder itself, or its nearest
// existing ancestor, must be a directory this process may write to.
void check_output_directory(const std::string& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path at = fs::absolute(out, ec);
  while (!at.empty() && !fs::exists(at, ec) && at != at.parent_path()) at = at.parent_path();
  if (!fs::is_directory(at, ec))
    throw UsageError(fmt::format("--out '{}': {} is not a directory\n    hint: name a directory for the run's checkpoints "
                                 "and metrics",
                                 out, at.string()));
  if (::access(at.c_str(), W_OK) != 0)
    throw UsageError(fmt::format("--out '{}': cannot write into {} ({})\n    hint: pick a --out under a directory you can write to",
                                 out, at.string(), std::strerror(errno)));
}

namespace fs = std::filesystem;

// The files a run writes into its folder; a folder holding any of them holds a run.
constexpr const char* kRunFiles[] = {"run.yaml", "train_state.safetensors", "model.safetensors", "metrics.jsonl",
                                     "best.safetensors"};

std::vector<std::string> run_files_in(const fs::path& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const char* name : kRunFiles)
    if (fs::exists(dir / name, ec)) found.emplace_back(name);
  return found;
}

// The default --out: runs/<model>/N for the first N not taken, so a run never lands on another.
std::string next_free_run(const std::string& model) {
  const fs::path base = fs::path("runs") / model;
  std::error_code ec;
  for (int n = 1;; ++n)
    if (!fs::exists(base / std::to_string(n), ec)) return (base / std::to_string(n)).string();
}

// A run folder is data: a new run does not go into a folder that holds one, unless the user
// says --overwrite, or resumes that very run. Checked before any data is loaded.
// The command that resumes the run in `out`: until kiln reads the model and data back from
// run.yaml, they are named again.
std::string resume_command(const std::string& model, const TrainOptions& o, const std::string& out) {
  return fmt::format("kiln train {}{} --resume {}", model, o.data.empty() ? "" : " --data " + o.data, out);
}

void refuse_to_overwrite(const std::string& out, const std::string& model, const TrainOptions& o) {
  if (o.overwrite) return;
  std::error_code ec;
  if (!o.resume.empty() && fs::exists(out, ec) && fs::equivalent(o.resume, out, ec)) return;
  const std::vector<std::string> found = run_files_in(out);
  if (found.empty()) return;
  std::string files;
  for (const std::string& f : found) files += (files.empty() ? "" : ", ") + f;
  throw Error(fmt::format("{} holds a run ({}); a new run there would overwrite it\n"
                          "    hint: continue it with: {}; train into another --out; or pass --overwrite to "
                          "replace it",
                          out, files, resume_command(model, o, out)),
              ExitCode::invalid_input);
}

// YAML's double-quoted scalars take JSON's escapes.
std::string quoted(const std::string& s) { return nlohmann::json(s).dump(); }

// OUT/run.yaml: what this run is, for whoever finds the folder later: the command line, the
// model, the recipe with every flag applied, the data, where it ran, and which kiln. Written
// atomically (a temporary file renamed over it).
void write_run_yaml(const RunOptions& run, const std::string& model, const Graph& graph, const TrainConfig& c,
                    const std::string& data, const std::string& data_description) {
  fs::create_directories(run.out);
  std::string command;
  for (const std::string& a : command_line()) command += (command.empty() ? "" : ", ") + quoted(a);
  std::string text = fmt::format(
      "# Written by kiln train when the run started.\n"
      "kiln: {{version: {}, build: {}}}\n"
      "command: [{}]\n"
      "cwd: {}\n"
      "model: {{file: {}, name: {}}}\n"
      "data: {{dir: {}, description: {}}}\n"
      "device: {{backend: {}, layout: {}, dtype: {}, threads: {}}}\n"
      "train:\n"
      "  epochs: {}\n"
      "  steps: {}\n"
      "  batch: {}\n"
      "  lr: {}\n"
      "  momentum: {}\n"
      "  weight_decay: {}\n"
      "  label_smoothing: {}\n"
      "  nesterov: {}\n"
      "  augment: {{crop: {}, translate: {}, flip: {}, alternate_flip: {}}}\n"
      "  shuffle: {}\n"
      "  seed: {}\n"
      "  init: {}\n"
      "  resumed_from: {}\n",
      quoted(KILN_VERSION_STRING), quoted(build_description()), command, quoted(fs::current_path().string()),
      quoted(model), quoted(graph.name()), data.empty() ? "null" : quoted(fs::absolute(data).string()),
      quoted(data_description), to_string(run.device), to_string(run.layout), to_string(run.dtype), run.threads,
      c.epochs, run.max_steps ? std::to_string(*run.max_steps) : "null", c.batch, c.lr, c.momentum, c.weight_decay,
      c.label_smoothing, c.nesterov, c.augment.crop, c.augment.translate, c.augment.flip, c.augment.alternate_flip, c.shuffle, c.seed, run.init.empty() ? "null" : quoted(run.init),
      run.resume.empty() ? "null" : quoted(run.resume));
  const fs::path path = fs::path(run.out) / "run.yaml", tmp = fs::path(run.out) / ".run.yaml.tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << text;
    if (!f.flush()) throw Error(fmt::format("cannot write {}", tmp.string()), ExitCode::runtime);
  }
  fs::rename(tmp, path);
}

int run_train(const TrainOptions& o) {
  std::string model = o.model.empty() ? default_model() : o.model;
  Spec spec = load_spec(model);
  print_warnings(spec.graph);
  TrainConfig config = spec.train;
  if (o.epochs) config.epochs = *o.epochs;
  if (o.batch) config.batch = *o.batch;
  if (o.lr) config.lr = *o.lr;
  if (o.seed) config.seed = *o.seed;
  if (o.no_augment) config.augment = Augment{};
  if (o.no_shuffle) config.shuffle = false;
  if (config.epochs <= 0) throw UsageError("--epochs must be positive");

  RunOptions run;
  run.device = resolve_device(o.device);
  run.threads = o.threads;
  run.max_steps = o.steps;
  // --resume DIR goes on writing in DIR unless --out says otherwise.
  run.out = !o.out.empty() ? o.out : !o.resume.empty() ? o.resume : next_free_run(spec.graph.name());
  check_output_directory(run.out);
  refuse_to_overwrite(run.out, model, o);
  run.init = o.init;
  run.resume = o.resume;
  run.layout = *parse_layout(o.layout);
  auto dtype = parse_dtype(o.dtype);
  if (!dtype) throw UsageError(fmt::format("--dtype must be fp32, fp16 or bf16, got '{}'", o.dtype));
  run.dtype = *dtype;
  if (o.workspace_mb) run.workspace_limit = static_cast<std::int64_t>(*o.workspace_mb * 1024 * 1024);
  run.autotune = o.autotune;
  auto pipeline = parse_pipeline(o.pipeline);
  if (!pipeline) throw UsageError(fmt::format("--pipeline must be auto, resident or stream, got '{}'", o.pipeline));
  run.pipeline = *pipeline;
  run.evaluate = o.eval == "epoch" ? EvalPolicy::every_epoch : o.eval == "end" ? EvalPolicy::at_end : EvalPolicy::never;

  std::string data_description;
  Cifar10 data = resolve_data(o.data, true, data_description);
  Trainer trainer(spec.graph, config, run);
  // A resumed run keeps the run.yaml it started with; a new one (or --overwrite) writes its
  // own, and --overwrite first clears the old run's files, so none of them outlives it.
  if (o.overwrite && o.resume.empty())
    for (const std::string& f : run_files_in(run.out)) fs::remove(fs::path(run.out) / f);
  if (!fs::exists(fs::path(run.out) / "run.yaml"))
    write_run_yaml(run, model, spec.graph, config, o.data, data_description);

  const bool tty = !o.json && isatty(STDERR_FILENO);
  if (!o.json)
    fmt::print("training {} ({}) on {}: {} train / {} test images, batch {}, {} epochs, lr {}, seed {}, device {}{}\n",
               spec.graph.name(), model, data_description, data.train.size(), data.test.size(), config.batch, config.epochs,
               config.lr, config.seed, to_string(run.device), run.layout == Layout::nhwc ? " (nhwc)" : "");
  std::fflush(stdout);
  trainer.on_step([&](const StepEvent& e) {
    if (o.json) return;
    if (tty) {
      int width = 30;
      auto filled = static_cast<int>(width * e.batch_in_epoch / std::max<std::int64_t>(e.batches_per_epoch, 1));
      fmt::print(stderr, "\repoch {} [{}{}] {}/{}  loss {:.4f}  lr {:.6f}  {:.0f} img/s ", e.epoch + 1, std::string(filled, '='),
                 std::string(width - filled, ' '), e.batch_in_epoch, e.batches_per_epoch, e.loss, e.lr, e.images_per_sec);
      std::fflush(stderr);
    } else if (e.batch_in_epoch % std::max<std::int64_t>(1, e.batches_per_epoch / 5) == 0) {
      fmt::print(stderr, "epoch {} step {}/{}  loss {:.4f}  lr {:.6f}  {:.0f} img/s\n", e.epoch + 1, e.batch_in_epoch,
                 e.batches_per_epoch, e.loss, e.lr, e.images_per_sec);
    }
  });
  trainer.on_epoch([&](const EpochEvent& e) {
    if (tty) fmt::print(stderr, "\r\033[K");
    if (o.json) {
      fmt::print("{}\n", metrics_record(e));  // the epoch's line in metrics.jsonl
    } else {
      fmt::print("epoch {:>3}  train loss {:.4f}  train acc {}  test loss {}  test acc {}  lr {:.6f}  {:.0f} img/s  elapsed {:.1f}s\n",
                 e.epoch + 1, e.train_loss, percent(e.train_accuracy), e.test_loss ? fmt::format("{:.4f}", *e.test_loss) : "-",
                 e.test_accuracy ? percent(*e.test_accuracy) : "-", e.lr, e.images_per_sec, e.elapsed_sec);
    }
    std::fflush(stdout);
  });

  g_trainer.store(&trainer);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  TrainResult result;
  try {
    result = trainer.fit(data);
  } catch (...) {
    g_trainer.store(nullptr);
    throw;
  }
  g_trainer.store(nullptr);
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);

  if (result.interrupted) {
    fmt::print(stderr, "kiln train: interrupted at step {}; saved {}/train_state.safetensors and model.safetensors. Resume with: "
                       "{}\n",
               result.steps, run.out, resume_command(model, o, run.out));
    return 0;
  }
  if (!o.json)
    fmt::print("done: {} steps in {:.1f}s{}; weights in {}/model.safetensors\n", result.steps, result.seconds,
               result.test_accuracy ? fmt::format(", test accuracy {}", percent(*result.test_accuracy)) : "", run.out);
  return 0;
}

}  // namespace

void add_train(CLI::App& root, std::vector<Command>& commands) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* app = root.add_subcommand("train", "Train a model spec (default: data/models/cifar_quick.yaml)");
  app->add_option("model", o->model, "Model spec (YAML)");
  app->add_option("--data", o->data, "CIFAR-10 binary directory (default: $KILN_CIFAR10_DIR, data/cifar-10-batches-bin, else synthetic)");
  app->add_option("--device", o->device, "auto, cpu or cuda")->check(CLI::IsMember({"auto", "cpu", "cuda"}))->capture_default_str();
  app->add_option("--epochs", o->epochs, "Epochs (may be fractional)")->check(positive());
  app->add_option("--steps", o->steps, "Stop after this many optimizer steps")->check(positive());
  app->add_option("--batch", o->batch, "Batch size")->check(positive());
  app->add_option("--lr", o->lr, "Peak learning rate")->check(positive());
  app->add_option("--seed", o->seed, "Seed of initialization, shuffling, augmentation and dropout");
  app->add_option("--out", o->out, "Output directory (default: the next free runs/<model name>/N; with --resume, that run's)");
  app->add_flag("--overwrite", o->overwrite, "Train into an --out that holds a run, replacing it");
  app->add_option("--init", o->init, "Initial weights (safetensors, PyTorch names)");
  app->add_option("--resume", o->resume, "Resume from a run's output directory");
  app->add_flag("--no-augment", o->no_augment, "No data augmentation");
  app->add_flag("--no-shuffle", o->no_shuffle, "Records in file order");
  app->add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(positive());
  app->add_option("--eval", o->eval, "When to evaluate the test set: epoch (after every epoch), end or none")
      ->check(CLI::IsMember({"epoch", "end", "none"}))
      ->capture_default_str();
  app->add_flag("--json", o->json, "One JSON object per epoch on stdout, no progress bar");
  app->add_option("--layout", o->layout, "Activation layout: nchw or nhwc")->check(CLI::IsMember({"nchw", "nhwc"}))->capture_default_str();
  app->add_option("--dtype", o->dtype, "CUDA: activation type (fp32; fp16 and bf16 are not implemented yet)")->capture_default_str();
  app->add_option("--workspace-limit", o->workspace_mb, "CUDA: MiB of cuDNN workspace a convolution may use")->check(non_negative());
  app->add_flag("--autotune", o->autotune, "CUDA: time the top cuDNN engines of each convolution before training");
  app->add_option("--pipeline", o->pipeline, "CUDA: auto, resident (dataset in device memory) or stream (pinned buffers)")
      ->check(CLI::IsMember({"auto", "resident", "stream"}))
      ->capture_default_str();
  commands.push_back({app, [o] { return run_train(*o); }});
}

}  // namespace kiln::cli
