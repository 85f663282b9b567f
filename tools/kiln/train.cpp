// kiln train: trains a model spec on CIFAR-10 (or a synthetic set), with a progress bar,
// per-epoch summaries, OUT/metrics.jsonl and checkpoints; Ctrl-C saves and exits cleanly.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <optional>
#include <unistd.h>
#include <vector>

#include "cli.hpp"
#include "commit.hpp"
#include "run_record.hpp"
#include "terminal.hpp"

namespace kiln::cli {

namespace {

struct TrainOptions {
  std::string model;
  std::optional<std::string> data;
  std::string format;                 // --format (empty: detected)
  std::string label;                  // --label (empty: the spec's, else fine)
  std::string val_split;              // --val-split N or a fraction
  bool no_resize = false;             // image folders: refuse images of another size
  std::optional<std::string> device;  // auto (default; a resumed run: its device)
  std::optional<double> epochs;
  std::optional<std::int64_t> steps;
  std::optional<std::int64_t> batch;
  std::optional<double> lr;
  std::optional<std::uint64_t> seed;
  std::string out;
  std::string init;
  std::string resume;
  bool overwrite = false;
  std::string profile_steps;  // "A:B"
  bool no_augment = false;
  bool no_shuffle = false;
  std::optional<int> threads;
  bool json = false;
  std::optional<std::string> layout;  // nchw (default; a resumed run: its layout)
  std::optional<std::string> cpu_conv;  // auto (default; a resumed run: its choice)
  std::optional<std::string> dtype;   // fp32
  std::optional<double> workspace_mb;
  bool autotune = false;
  bool tf32 = false;
  bool nondeterministic = false;
  bool no_cuda_graph = false;
  bool no_fusion = false;
  bool cudnn_fusion = false;
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

// "41.3s", "12m05s", "2h03m".
std::string duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e9) return "-";
  if (seconds < 60) return fmt::format("{:.1f}s", seconds);
  const auto s = static_cast<std::int64_t>(seconds);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60);
}

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
// The command that resumes the run in `out`: its run.yaml says the rest.
std::string resume_command(const std::string& out) { return fmt::format("kiln train --resume {}", out); }

void refuse_to_overwrite(const std::string& out, const TrainOptions& o) {
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
                          out, files, resume_command(out)),
              ExitCode::invalid_input);
}

// --profile-steps A:B: steps A to B, from 1, A <= B.
std::pair<std::int64_t, std::int64_t> parse_step_range(const std::string& text) {
  const std::size_t colon = text.find(':');
  auto number = [](const std::string& t) -> std::int64_t {
    if (t.empty() || t.size() > 15 || t.find_first_not_of("0123456789") != std::string::npos) return 0;
    return std::stoll(t);
  };
  const std::int64_t first = colon == std::string::npos ? 0 : number(text.substr(0, colon));
  const std::int64_t last = colon == std::string::npos ? 0 : number(text.substr(colon + 1));
  if (first < 1 || last < first)
    throw UsageError(fmt::format("--profile-steps must be FIRST:LAST, steps from 1 with FIRST <= LAST (e.g. 50:60), got '{}'",
                                 text));
  return {first, last};
}

bool same_path(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (fs::equivalent(a, b, ec)) return true;
  return fs::weakly_canonical(a, ec) == fs::weakly_canonical(b, ec);
}

std::string absolute(const std::string& path) { return path.empty() ? path : fs::absolute(path).lexically_normal().string(); }

// A resumed run is the run its record describes: the model, recipe and data come from
// DIR/run.yaml, and a flag that contradicts them is refused, both values side by side. What
// may change: --epochs (the schedule becomes the new length's, from the current step),
// --steps, --threads, --device, --eval and the CUDA tuning flags.
void resume_from_record(const RunRecord& r, const std::string& dir, const TrainOptions& o, const TrainConfig& spec_train,
                        TrainConfig& config) {
  std::vector<std::string> conflicts;
  auto differs = [&](const std::string& what, const std::string& given, const std::string& recorded) {
    conflicts.push_back(fmt::format("{} {} (the run's: {})", what, given, recorded));
  };
  const bool other_model = !o.model.empty() && !same_path(o.model, r.model_file);
  if (other_model) differs("model", o.model, r.model_file);
  if (o.data && (r.data_dir.empty() || !same_path(*o.data, r.data_dir)))
    differs("--data", *o.data, r.data_dir.empty() ? "the synthetic set made in memory" : r.data_dir);
  if (!o.format.empty() && o.format != r.data_format) differs("--format", o.format, r.data_format);
  if (!o.label.empty() && o.label != r.data_label) differs("--label", o.label, r.data_label.empty() ? "none" : r.data_label);
  if (!o.val_split.empty()) differs("--val-split", o.val_split, r.val_count ? std::to_string(r.val_count) : "none");
  if (o.batch && *o.batch != r.train.batch) differs("--batch", std::to_string(*o.batch), std::to_string(r.train.batch));
  if (o.lr && *o.lr != r.train.lr) differs("--lr", fmt::format("{}", *o.lr), fmt::format("{}", r.train.lr));
  if (o.seed && *o.seed != r.train.seed) differs("--seed", std::to_string(*o.seed), std::to_string(r.train.seed));
  if (o.no_augment && r.train.augment.enabled()) differs("--no-augment", "(no augmentation)", "augmented");
  if (o.no_shuffle && r.train.shuffle) differs("--no-shuffle", "(file order)", "shuffled");
  if (o.layout && *o.layout != r.layout) differs("--layout", *o.layout, r.layout);
  if (o.cpu_conv && *o.cpu_conv != r.cpu_conv) differs("--cpu-conv", *o.cpu_conv, r.cpu_conv);
  if (o.dtype && *o.dtype != r.dtype) differs("--dtype", *o.dtype, r.dtype);
  if (!o.init.empty() && (r.init.empty() || !same_path(o.init, r.init)))
    differs("--init", o.init, r.init.empty() ? "none" : r.init);
  // The spec's own recipe, if the file was edited since (another model says enough).
  auto spec_differs = [&](const char* key, double now, double then) {
    if (now != then && !other_model) differs(fmt::format("the spec's {}", key), fmt::format("{}", now), fmt::format("{}", then));
  };
  spec_differs("momentum", spec_train.momentum, r.train.momentum);
  spec_differs("weight_decay", spec_train.weight_decay, r.train.weight_decay);
  spec_differs("label_smoothing", spec_train.label_smoothing, r.train.label_smoothing);
  if (spec_train.nesterov != r.train.nesterov && !other_model)
    differs("the spec's nesterov", spec_train.nesterov ? "true" : "false", r.train.nesterov ? "true" : "false");
  if (!conflicts.empty()) {
    std::string list;
    for (const std::string& c : conflicts) list += "\n    " + c;
    throw UsageError(fmt::format("--resume {}: the run in {}/run.yaml was started otherwise:{}\n    hint: a resumed run "
                                 "keeps its model, data and recipe; only --epochs, --steps, --threads, --device and --eval "
                                 "may change. To train with other settings, start a new run (another --out)",
                                 dir, dir, list));
  }
  config.batch = r.train.batch;
  config.lr = r.train.lr;
  config.seed = r.train.seed;
  config.augment = r.train.augment;
  config.shuffle = r.train.shuffle;
  config.epochs = o.epochs ? *o.epochs : r.train.epochs;
  config.mean = r.train.mean;  // the normalization the run trained with, whatever the spec says now
  config.std = r.train.std;
  config.normalize_given = true;
}

// --val-split: a count ("5000") or a fraction of the training images ("0.1").
std::int64_t val_count(const std::string& text, std::int64_t train) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  const bool number = !text.empty() && end == text.c_str() + text.size() && errno == 0 && v > 0;
  const bool fraction = number && v < 1;
  if (!number || (!fraction && v != std::floor(v)))
    throw UsageError(fmt::format("--val-split must be a count of training images (e.g. 5000) or a fraction of them "
                                 "(e.g. 0.1), got '{}'",
                                 text));
  return fraction ? std::max<std::int64_t>(1, std::llround(v * static_cast<double>(train))) : static_cast<std::int64_t>(v);
}

int run_train(const TrainOptions& o) {
  // A malformed flag is a usage error before anything is read.
  std::optional<std::pair<std::int64_t, std::int64_t>> profile_steps;
  if (!o.profile_steps.empty()) profile_steps = parse_step_range(o.profile_steps);
  // --resume DIR where DIR has a run.yaml: the folder alone says what to run.
  std::optional<RunRecord> record;
  if (!o.resume.empty() && fs::exists(fs::path(o.resume) / "run.yaml"))
    record = read_run_record((fs::path(o.resume) / "run.yaml").string());
  std::string model = !o.model.empty() ? o.model : record ? record->model_file : default_model();
  Spec spec = load_spec(model);
  print_warnings(spec.graph);
  TrainConfig config = spec.train;
  if (record) {
    resume_from_record(*record, o.resume, o, spec.train, config);
  } else {
    if (o.epochs) config.epochs = *o.epochs;
    if (o.batch) config.batch = *o.batch;
    if (o.lr) config.lr = *o.lr;
    if (o.seed) config.seed = *o.seed;
    if (o.no_augment) config.augment = Augment{};
    if (o.no_shuffle) config.shuffle = false;
  }
  if (config.epochs <= 0) throw UsageError("--epochs must be positive");

  RunOptions run;
  run.profile_steps = profile_steps;
  run.device = resolve_device(o.device ? *o.device : record ? record->backend : "auto", &run.device_index);
  run.threads = o.threads ? *o.threads : record ? record->threads : 0;
  // --steps counts this invocation's steps: a resumed run goes on to its end unless given.
  run.max_steps = o.steps;
  // --resume DIR goes on writing in DIR unless --out says otherwise.
  run.out = !o.out.empty() ? o.out : !o.resume.empty() ? o.resume : next_free_run(spec.graph.name());
  check_output_directory(run.out);
  refuse_to_overwrite(run.out, o);
  run.init = record ? record->init : o.init;
  run.resume = o.resume;
  // The kernels change the rounding, so a resumed run keeps the ones it started with.
  run.cpu_conv = *parse_cpu_conv(o.cpu_conv ? *o.cpu_conv : record ? record->cpu_conv : "auto");
  // The number type: --dtype, else a resumed run's, else the spec's train: dtype, else fp32.
  const std::string dtype_name = o.dtype          ? *o.dtype
                                 : record         ? record->dtype
                                 : config.dtype   ? std::string(to_string(*config.dtype))
                                                  : "fp32";
  auto dtype = parse_dtype(dtype_name);
  if (!dtype) throw UsageError(fmt::format("--dtype must be fp32, fp16 or bf16, got '{}'", dtype_name));
  run.dtype = *dtype;
  config.dtype = *dtype;
  // NHWC by default where tensor cores want it: bf16 and fp16 on a GPU.
  const std::string default_layout = run.device == Backend::cuda && run.dtype != DType::f32 ? "nhwc" : "nchw";
  run.layout = *parse_layout(o.layout ? *o.layout : record ? record->layout : default_layout);
  if (o.workspace_mb) run.workspace_limit = static_cast<std::int64_t>(*o.workspace_mb * 1024 * 1024);
  run.autotune = o.autotune;
  run.tf32 = o.tf32;
  run.nondeterministic = o.nondeterministic;
  run.cuda_graph = !o.no_cuda_graph;
  run.fusion = !o.no_fusion;
  run.cudnn_fusion = o.cudnn_fusion;
  auto pipeline = parse_pipeline(o.pipeline);
  if (!pipeline) throw UsageError(fmt::format("--pipeline must be auto, resident or stream, got '{}'", o.pipeline));
  run.pipeline = *pipeline;
  run.evaluate = o.eval == "epoch" ? EvalPolicy::every_epoch : o.eval == "end" ? EvalPolicy::at_end : EvalPolicy::never;

  // The data: a resumed run's own, unchanged since it started (checked before reading it).
  std::string data_dir = record ? record->data_dir : o.data ? *o.data : "";
  if (record && !record->data_dir.empty()) {
    const std::string now = data_fingerprint(record->data_dir);
    if (now != record->data_fingerprint) {
      // The files that differ, each as now and as the run saw it ("name size hash").
      auto entries = [](const std::string& f) {
        std::vector<std::string> v;
        for (std::size_t at = 0; at < f.size();) {
          const std::size_t end = std::min(f.find("; ", at), f.size());
          v.push_back(f.substr(at, end - at));
          at = end + 2;
        }
        return v;
      };
      const std::vector<std::string> a = entries(now), b = entries(record->data_fingerprint);
      std::string changes;
      for (const std::string& e : a)
        if (std::find(b.begin(), b.end(), e) == b.end()) changes += "\n    now:       " + e;
      for (const std::string& e : b)
        if (std::find(a.begin(), a.end(), e) == a.end()) changes += "\n    the run's: " + e;
      throw Error(fmt::format("--resume {}: the data in {} changed since the run started (file, bytes, hash):{}"
                              "\n    hint: resume with the data it started with, or start a new run (another --out)",
                              o.resume, record->data_dir, changes),
                  ExitCode::invalid_input);
    }
  }
  std::string data_description;
  DataRequest want = data_request(data_dir, o.format, o.label, spec);
  want.resize = record ? record->resize : !o.no_resize;
  if (record) {  // the run's own format and label, never detected again
    want.format = parse_format_flag(record->data_format);
    want.label = record->data_label == "coarse" ? Cifar100Label::coarse : Cifar100Label::fine;
    want.label_flag = false;
  }
  // A resumed run that had the synthetic set has it again: the environment variables and the
  // default folders count only for a new run.
  Splits data = record && data_dir.empty() ? synthetic_data(want, data_description)
                                            : resolve_data(want, true, data_description, &data_dir);
  // The validation split: held out after a shuffle seeded by the run's seed, so a resumed
  // run holds out the same images.
  const std::int64_t held = record ? record->val_count : o.val_split.empty() ? 0 : val_count(o.val_split, data.train.size());
  if (data.format == DataFormat::folder && data.test.size() == 0 && held == 0)
    throw UsageError(fmt::format("'{}' holds class folders but no train/ and test/ folders: give --val-split N (or a fraction, "
                                 "e.g. 0.1) to validate on part of it, or arrange it as {}/train/<class>/ and "
                                 "{}/test/<class>/",
                                 data.train.source, data.train.source, data.train.source));
  if (held > 0) hold_out(data, held, record ? record->val_seed : config.seed);
  check_data(spec.graph, data);
  // Normalization: the spec's normalize:, else the format's (CIFAR-10's published values,
  // or the training images' own statistics), computed now and kept in run.yaml.
  std::string normalize_source = record ? "the run's" : "the spec's";
  if (!config.normalize_given) {
    const ChannelStats s = default_normalization(data);
    config.mean = s.mean;
    config.std = s.std;
    normalize_source = data.format == DataFormat::cifar10 ? "CIFAR-10's published values" : "from the training images";
  }
  Trainer trainer(spec.graph, config, run);
  // A resumed run keeps the run.yaml it started with (its epochs updated when --epochs
  // extends it); a new one (or --overwrite) writes its own, and --overwrite first clears the
  // old run's files, so none of them outlives it.
  if (o.overwrite && o.resume.empty())
    for (const std::string& f : run_files_in(run.out)) fs::remove(fs::path(run.out) / f);
  if (record) {
    if (record->train.epochs != config.epochs) {
      RunRecord extended = *record;
      extended.train.epochs = config.epochs;
      write_run_record(run.out, extended);
    }
  } else if (!fs::exists(fs::path(run.out) / "run.yaml")) {
    RunRecord r;
    r.version = KILN_VERSION_STRING;
    r.commit = KILN_GIT_COMMIT;
    r.build = build_description();
    r.command = command_line();
    r.cwd = fs::current_path().string();
    r.model_file = absolute(model);
    r.model_name = spec.graph.name();
    r.data_dir = absolute(data_dir);
    r.data_description = data_description;
    r.data_fingerprint = data_dir.empty() ? "" : data_fingerprint(data_dir);
    r.data_format = format_name(data.format);
    r.data_label = data.format == DataFormat::cifar100 ? (want.label == Cifar100Label::coarse ? "coarse" : "fine") : "";
    r.val_count = held;
    r.val_seed = config.seed;
    r.class_names = data.train.class_names;
    r.resize = want.resize;
    r.backend = run.device == Backend::cuda && run.device_index > 0 ? fmt::format("cuda:{}", run.device_index)
                                                                    : std::string(to_string(run.device));
    r.layout = std::string(to_string(run.layout));
    r.cpu_conv = std::string(to_string(run.cpu_conv));
    r.dtype = std::string(to_string(run.dtype));
    r.threads = run.threads;
    r.train = config;
    r.steps = run.max_steps;
    r.init = absolute(run.init);
    write_run_record(run.out, r);
  }

  // On a terminal every line fits its width (paths lose leading folders first), the progress
  // line is redrawn in place at most four times a second; elsewhere, plain whole lines.
  const std::size_t out_width = o.json ? 0 : terminal_width(STDOUT_FILENO);
  const std::size_t err_width = o.json ? 0 : terminal_width(STDERR_FILENO);
  const bool tty = err_width > 0;
  if (!o.json) {
    // TF32 and nondeterministic engines change the numbers, so the header says when they are on.
    std::vector<std::string> notes;
    if (run.layout == Layout::nhwc) notes.emplace_back("nhwc");
    if (run.device == Backend::cpu && run.cpu_conv != CpuConv::automatic)
      notes.emplace_back(fmt::format("{} convolutions", to_string(run.cpu_conv)));
    if (run.device == Backend::cuda && run.dtype == DType::f32 && (run.tf32 || config.tf32)) notes.emplace_back("tf32");
    if (run.dtype != DType::f32)
      notes.emplace_back(fmt::format("{}{}", to_string(run.dtype), run.device == Backend::cpu ? ", emulated in fp32" : ""));
    if (run.device == Backend::cuda && run.nondeterministic) notes.emplace_back("nondeterministic");
    if (run.device == Backend::cuda && !run.cuda_graph) notes.emplace_back("no CUDA graph");
    if (run.device == Backend::cuda && !run.fusion) notes.emplace_back("no fusion");
    if (run.device == Backend::cuda && run.fusion && run.cudnn_fusion) notes.emplace_back("cuDNN fusion");
    const std::string device = fmt::format("device {}{}", to_string(run.device),
                                           notes.empty() ? "" : fmt::format(" ({})", fmt::join(notes, ", ")));
    const std::string head = fmt::format("training {} (", spec.graph.name()), tail = "), " + device;
    const std::size_t room = out_width > display_width(head + tail) ? out_width - display_width(head + tail) : 8;
    fmt::print("{}\n", fit(head + (out_width ? shorten_path(model, room) : model) + tail, out_width));
    fmt::print("{}\n", fit(data.test.size() > 0 ? fmt::format("data: {}, {} train / {}{} test images", data_description,
                                                                data.train.size(),
                                                                held ? fmt::format("{} validation / ", data.val.size()) : "",
                                                                data.test.size())
                                                  : fmt::format("data: {}, {} train / {} validation images, no test split: no "
                                                                "test evaluation",
                                                                data_description, data.train.size(), data.val.size()),
                            out_width));
    auto values = [](const std::vector<float>& v) {
      std::string s;
      for (float x : v) s += fmt::format("{}{:.4f}", s.empty() ? "" : ", ", x);
      return s;
    };
    fmt::print("{}\n", fit(fmt::format("normalize: mean [{}], std [{}] ({})", values(config.mean), values(config.std),
                                        normalize_source),
                            out_width));
    // What will run: --steps stops early, the schedule still spans the epochs.
    const std::string length = run.max_steps ? fmt::format("{} steps (schedule of {} epochs)", *run.max_steps, config.epochs)
                                             : fmt::format("{} epochs", config.epochs);
    fmt::print("{}\n", fit(fmt::format("run: {}, batch {}, lr {}, seed {}", length, config.batch, config.lr, config.seed),
                            out_width));
  }
  std::fflush(stdout);

  // The progress line: epoch k/N, step i/M, the epoch's running mean loss, img/s, ETA.
  using Clock = std::chrono::steady_clock;
  struct Progress {
    Clock::time_point start = Clock::now(), last_draw{};
    std::int64_t first_step = -1, epoch = -1, count = 0, epochs = 0;
    double loss_sum = 0;
  };
  auto progress = std::make_shared<Progress>();
  trainer.on_step([&, progress](const StepEvent& e) {
    if (o.json) return;
    if (e.skipped)
      fmt::print(stderr, "{}step {}: the fp16 gradients overflowed at loss scale {:g}: update skipped, scale halved\n",
                 tty ? "\r\033[K" : "", e.step, e.loss_scale);
    Progress& p = *progress;
    if (p.first_step < 0) p.first_step = e.step - 1, p.start = Clock::now();
    if (e.epoch != p.epoch) p.epoch = e.epoch, p.loss_sum = 0, p.count = 0;
    p.loss_sum += e.loss;
    ++p.count;
    const std::int64_t per_epoch = std::max<std::int64_t>(e.batches_per_epoch, 1);
    const std::int64_t target = run.max_steps ? std::min(*run.max_steps, e.total_steps) : e.total_steps;
    const std::int64_t epochs = p.epochs = (target + per_epoch - 1) / per_epoch;
    const double seconds = std::chrono::duration<double>(Clock::now() - p.start).count();
    const std::int64_t done = e.step - p.first_step;
    const std::string eta = done > 0 ? duration(seconds / static_cast<double>(done) *
                                                static_cast<double>(std::max<std::int64_t>(target - e.step, 0)))
                                     : "-";
    const std::string line = fmt::format("epoch {}/{} step {}/{}  loss {:.4f}  {:.0f} img/s  ETA {}", e.epoch + 1, epochs,
                                         e.batch_in_epoch, per_epoch, p.loss_sum / static_cast<double>(p.count),
                                         e.images_per_sec, eta);
    if (tty) {
      const auto now = Clock::now();
      if (now - p.last_draw < std::chrono::milliseconds(250) && e.batch_in_epoch != per_epoch) return;
      p.last_draw = now;
      // One column short of the width: a line that fills it wraps on some terminals.
      fmt::print(stderr, "\r{}\033[K", fit(line, err_width - 1));
      std::fflush(stderr);
    } else if (e.batch_in_epoch % std::max<std::int64_t>(1, per_epoch / 5) == 0) {
      fmt::print(stderr, "{}\n", line);
    }
  });
  trainer.on_epoch([&, progress](const EpochEvent& e) {
    if (tty) fmt::print(stderr, "\r\033[K");
    if (o.json) {
      fmt::print("{}\n", metrics_record(e));  // the epoch's line in metrics.jsonl
    } else {
      // Within 80 columns with the img/s, which a narrower terminal loses first (the lr and
      // the rest are in metrics.jsonl and --json).
      // With a validation split the epoch is judged on it; the test set comes once, at the end.
      const bool val = held > 0;
      const std::optional<double>& loss = val ? e.val_loss : e.test_loss;
      const std::optional<double>& acc = val ? e.val_accuracy : e.test_accuracy;
      const std::string head =
          fmt::format("epoch {}/{}  train loss {:.4f} acc {}  {} loss {} acc {}", e.epoch + 1,
                      std::max(progress->epochs, e.epoch + 1), e.train_loss, percent(e.train_accuracy), val ? "val" : "test",
                      loss ? fmt::format("{:.4f}", *loss) : "-", acc ? percent(*acc) : "-");
      std::string line = fmt::format("{}  {:.0f} img/s  {}", head, e.images_per_sec, duration(e.elapsed_sec));
      if (out_width && display_width(line) > out_width) line = fmt::format("{}  {}", head, duration(e.elapsed_sec));
      fmt::print("{}\n", fit(line, out_width));
      if (val && e.test_accuracy)
        fmt::print("{}\n", fit(fmt::format("test loss {:.4f} acc {} (after the last epoch)", e.test_loss.value_or(0),
                                            percent(*e.test_accuracy)),
                                out_width));
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
               result.steps, run.out, resume_command(run.out));
    return 0;
  }
  if (!o.json) {
    fmt::print("{}\n", fit(fmt::format("done: {} steps in {}{}", result.steps, duration(result.seconds),
                                        result.test_accuracy ? fmt::format(", test accuracy {}", percent(*result.test_accuracy)) : ""),
                            out_width));
    const std::string weights = run.out + "/model.safetensors";
    fmt::print("weights in {}\n", out_width ? shorten_path(weights, out_width > 12 ? out_width - 11 : 1) : weights);
  }
  return 0;
}

}  // namespace

void add_train(CLI::App& root, std::vector<Command>& commands) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* app = root.add_subcommand("train", "Train a model spec (default: data/models/cifar_quick.yaml)");
  app->add_option("model", o->model, "Model spec (YAML)");
  app->add_option("--data", o->data,
                  "Data directory, its format detected (default: the format's $KILN_*_DIR or data/ folder, else a synthetic set)");
  app->add_option("--format", o->format, "The data's format: cifar10, cifar100, mnist or fashion-mnist (default: detected)");
  app->add_option("--label", o->label, "CIFAR-100: fine (100 classes, default) or coarse (20)");
  app->add_flag("--no-resize", o->no_resize, "Image folders: refuse images whose size differs from the model's input");
  app->add_option("--val-split", o->val_split,
                  "Hold out N training images (or a fraction, e.g. 0.1) for per-epoch validation; the test set is then "
                  "evaluated once, at the end");
  app->add_option("--device", o->device, "auto (default), cpu, cuda or cuda:N (a device index, see kiln info)")->check(device_choice());
  app->add_option("--epochs", o->epochs, "Epochs (may be fractional)")->check(positive());
  app->add_option("--steps", o->steps, "Stop after this many optimizer steps")->check(positive());
  app->add_option("--batch", o->batch, "Batch size")->check(positive());
  app->add_option("--lr", o->lr, "Peak learning rate")->check(positive());
  app->add_option("--seed", o->seed, "Seed of initialization, shuffling, augmentation and dropout");
  app->add_option("--out", o->out, "Output directory (default: the next free runs/<model name>/N; with --resume, that run's)");
  app->add_flag("--overwrite", o->overwrite, "Train into an --out that holds a run, replacing it");
  app->add_option("--profile-steps", o->profile_steps,
                  "CUDA: run steps FIRST:LAST between cudaProfilerStart/Stop, for nsys --capture-range=cudaProfilerApi "
                  "(accepted without a GPU, with nothing to capture)");
  app->add_option("--init", o->init, "Initial weights (safetensors, PyTorch names)");
  app->add_option("--resume", o->resume, "Resume from a run's output directory");
  app->add_flag("--no-augment", o->no_augment, "No data augmentation");
  app->add_flag("--no-shuffle", o->no_shuffle, "Records in file order");
  app->add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(positive());
  app->add_option("--eval", o->eval, "When to evaluate the test set: epoch (after every epoch), end or none")
      ->check(CLI::IsMember({"epoch", "end", "none"}))
      ->capture_default_str();
  app->add_flag("--json", o->json, "One JSON object per epoch on stdout, no progress bar");
  app->add_option("--layout", o->layout, "Activation layout: nchw or nhwc (default: nhwc for bf16/fp16 on CUDA, else nchw)")->check(CLI::IsMember({"nchw", "nhwc"}));
  app->add_option("--cpu-conv", o->cpu_conv,
                  "CPU convolution kernels: auto (default: per layer and pass, kiln's GEMM or Winograd or oneDNN's, by a fixed rule), kiln (im2col + GEMM only) or onednn")
      ->check(CLI::IsMember({"auto", "kiln", "onednn"}));
  app->add_option("--dtype", o->dtype,
                  "fp32 (default), or mixed precision in bf16 or fp16 (the spec's train: dtype; fp16 with a dynamic loss "
                  "scale). The CPU emulates bf16 and fp16 in fp32, slowly: for checking; CUDA runs them on tensor cores")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  app->add_option("--workspace-limit", o->workspace_mb, "CUDA: MiB of cuDNN workspace a convolution may use")->check(non_negative());
  app->add_flag("--autotune", o->autotune, "CUDA: time the top cuDNN engines of each convolution before training");
  app->add_flag("--tf32", o->tf32,
                "CUDA, fp32: let cuDNN and cuBLAS use TF32 tensor cores (faster, ~10-bit mantissa products; the spec's "
                "train: tf32: true does the same). Default: fp32 is fp32. Accepted and without effect on the CPU");
  app->add_flag("--nondeterministic", o->nondeterministic,
                "CUDA: allow cuDNN engines whose results vary from run to run (faster; resume is then not bit-exact). "
                "Default: deterministic. Accepted and without effect on the CPU");
  app->add_flag("--no-cuda-graph", o->no_cuda_graph,
                "CUDA: run every training step kernel by kernel instead of replaying it as a CUDA graph after a warm-up "
                "step (for debugging and profiling). Accepted and without effect on the CPU");
  app->add_flag("--no-fusion", o->no_fusion,
                "CUDA: run batchnorm and the activation after it as two kernels each way instead of one (for comparison). "
                "Accepted and without effect on the CPU");
  app->add_flag("--cudnn-fusion", o->cudnn_fusion,
                "CUDA: where a batchnorm + activation feeds a convolution, apply them in the convolution's prologue "
                "with cuDNN's fused graphs when cuDNN has engines for them (not yet checked on a GPU; default: kiln's "
                "fused kernel). Accepted and without effect on the CPU");
  app->add_option("--pipeline", o->pipeline, "CUDA: auto, resident (dataset in device memory) or stream (pinned buffers)")
      ->check(CLI::IsMember({"auto", "resident", "stream"}))
      ->capture_default_str();
  commands.push_back({app, [o] { return run_train(*o); }});
}

}  // namespace kiln::cli
