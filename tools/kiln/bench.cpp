// kiln bench: per-layer forward/backward milliseconds and whole-step throughput; the last
// line is `train: N img/s (batch B, T threads)`.
#include <fmt/format.h>

#include "cli.hpp"

namespace kiln::cli {

namespace {

struct BenchCliOptions {
  std::string model;
  std::string device = "auto";
  std::optional<std::int64_t> batch;
  int threads = 0;
  int repeats = 7;
  int steps = 5;
  bool json = false;
  std::optional<std::string> layout;  // nhwc for bf16/fp16 on CUDA, else nchw
  std::string cpu_conv = "auto";
  std::string dtype = "fp32";
  bool autotune = false;
  bool tf32 = false;
  bool nondeterministic = false;
};

int run_bench(const BenchCliOptions& o) {
  Spec spec = load_spec(o.model);
  BenchOptions b;
  b.device = resolve_device(o.device, &b.device_index);
  b.batch = o.batch.value_or(spec.train.batch);
  b.threads = o.threads;
  b.repeats = o.repeats;
  b.steps_per_repeat = o.steps;
  b.cpu_conv = *parse_cpu_conv(o.cpu_conv);
  auto dtype = parse_dtype(o.dtype);
  if (!dtype) throw UsageError(fmt::format("--dtype must be fp32, fp16 or bf16, got '{}'", o.dtype));
  b.dtype = *dtype;
  // NHWC by default where tensor cores want it: bf16 and fp16 on a GPU.
  b.layout = *parse_layout(o.layout ? *o.layout : b.device == Backend::cuda && b.dtype != DType::f32 ? "nhwc" : "nchw");
  b.autotune = o.autotune;
  b.tf32 = o.tf32;
  b.nondeterministic = o.nondeterministic;
  BenchResult r = bench(spec.graph, spec.train, b);
  if (o.json) {
    nlohmann::json j{{"model", spec.graph.name()}, {"backend", r.backend}, {"batch", r.batch}, {"threads", r.threads},
                     {"images_per_sec", r.median_images_per_sec}, {"repeats", r.images_per_sec}};
    for (const auto& l : r.layers)
      j["layers"].push_back(
          {{"name", l.name}, {"op", l.op}, {"forward_ms", l.forward_ms}, {"backward_ms", l.backward_ms}, {"engine", l.detail}});
    fmt::print("{}\n", j.dump(2));
  } else {
    fmt::print("{} on {}, batch {}\n", spec.graph.name(), r.backend, r.batch);
    fmt::print("{:<16} {:<16} {:>10} {:>10}\n", "layer", "op", "fwd ms", "bwd ms");
    double fwd = 0, bwd = 0;
    for (const auto& l : r.layers) {
      fmt::print("{:<16} {:<16} {:>10.3f} {:>10.3f}{}\n", l.name, l.op, l.forward_ms, l.backward_ms,
                 l.detail.empty() ? "" : "  " + l.detail);
      fwd += l.forward_ms;
      bwd += l.backward_ms;
    }
    fmt::print("{:<16} {:<16} {:>10.3f} {:>10.3f}\n", "total", "", fwd, bwd);
    std::string reps;
    for (double v : r.images_per_sec) reps += fmt::format(" {:.0f}", v);
    fmt::print("repetitions (img/s):{}\n", reps);
  }
  // The last line, for scripts: plain digits.
  if (b.device == Backend::cpu)
    fmt::print("train: {:.0f} img/s (batch {}, {} threads{})\n", r.median_images_per_sec, r.batch, r.threads,
               b.layout == Layout::nhwc ? ", nhwc" : "");
  else
    fmt::print("train: {:.0f} img/s (batch {}, {})\n", r.median_images_per_sec, r.batch, r.backend);
  return 0;
}

}  // namespace

void add_bench(CLI::App& root, std::vector<Command>& commands) {
  auto o = std::make_shared<BenchCliOptions>();
  CLI::App* app = root.add_subcommand("bench", "Time training steps and each layer's forward and backward");
  app->add_option("model", o->model, "Model spec (YAML)")->required();
  app->add_option("--device", o->device, "auto (default), cpu, cuda or cuda:N (a device index, see kiln info)")->check(device_choice());
  app->add_option("--batch", o->batch, "Batch size (default: the spec's train: batch)")->check(positive());
  app->add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(positive());
  app->add_option("--repeats", o->repeats, "Timed repetitions (the median is reported)")->check(positive())->capture_default_str();
  app->add_option("--steps", o->steps, "Training steps per repetition")->check(positive())->capture_default_str();
  app->add_flag("--json", o->json, "Print JSON (the last line stays the summary)");
  app->add_option("--layout", o->layout, "Activation layout: nchw or nhwc (default: nhwc for bf16/fp16 on CUDA, else nchw)")
      ->check(CLI::IsMember({"nchw", "nhwc"}));
  app->add_option("--cpu-conv", o->cpu_conv, "CPU convolution kernels: auto (per layer and pass: kiln's GEMM or Winograd, or oneDNN's), kiln (im2col + GEMM only) or onednn")
      ->check(CLI::IsMember({"auto", "kiln", "onednn"}))
      ->capture_default_str();
  app->add_option("--dtype", o->dtype, "fp32, bf16 or fp16 (mixed precision; the CPU emulates bf16 and fp16 in fp32, slowly; CUDA runs them on tensor cores)")->capture_default_str();
  app->add_flag("--autotune", o->autotune, "CUDA: time the top cuDNN engines first");
  app->add_flag("--tf32", o->tf32,
                "CUDA, fp32: let cuDNN and cuBLAS use TF32 tensor cores (the spec's train: tf32: true does the same). "
                "Accepted and without effect on the CPU");
  app->add_flag("--nondeterministic", o->nondeterministic,
                "CUDA: allow cuDNN engines whose results vary from run to run. Accepted and without effect on the CPU");
  commands.push_back({app, [o] { return run_bench(*o); }});
}

}  // namespace kiln::cli
