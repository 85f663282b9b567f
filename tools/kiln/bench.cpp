// kiln bench: per-layer forward/backward milliseconds and achieved GFLOP/s, whole-step
// throughput, the step's FLOPs and, on a GPU in kiln's table, the datasheet peak and the
// FLOP floor (flops.hpp); the last line is `train: N img/s (batch B, T threads)`.
#include <fmt/format.h>

#include "cli.hpp"
#include "flops.hpp"

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
  bool no_cuda_graph = false;
  bool no_fusion = false;
  bool cudnn_fusion = false;
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
  b.cuda_graph = !o.no_cuda_graph;
  b.fusion = !o.no_fusion;
  b.cudnn_fusion = o.cudnn_fusion;
  BenchResult r = bench(spec.graph, spec.train, b);

  // Achieved arithmetic: the graph's FLOPs over the measured times.
  const Graph& graph = spec.graph;
  std::int64_t step_flops = 0;  // per image
  for (const Layer& layer : graph.layers()) step_flops += train_flops(layer);
  auto gflops_per_s = [&](std::int64_t flops_per_image, double ms) -> std::optional<double> {
    if (flops_per_image <= 0 || ms <= 0) return std::nullopt;
    return static_cast<double>(flops_per_image) * static_cast<double>(r.batch) / (ms * 1e6);
  };
  const double step_tflops = static_cast<double>(step_flops) * r.median_images_per_sec / 1e12;
  const double step_ms = r.median_images_per_sec > 0 ? 1e3 * static_cast<double>(r.batch) / r.median_images_per_sec : 0;
  std::optional<Peak> peak;
  std::string gpu;
  if (b.device == Backend::cuda) {
    const std::vector<DeviceInfo> devices = cuda_devices();
    if (b.device_index >= 0 && static_cast<std::size_t>(b.device_index) < devices.size())
      gpu = devices[static_cast<std::size_t>(b.device_index)].name;
    peak = datasheet_peak(gpu, b.dtype, b.tf32 || spec.train.tf32);
  }
  auto floor_ms = [&](double fraction) {
    return static_cast<double>(step_flops) * static_cast<double>(r.batch) / (peak->tflops * 1e12 * fraction) * 1e3;
  };
  auto per_layer = [&](const LayerBench& l, bool forward) {
    const Layer* layer = graph.find(l.name);
    if (!layer) return std::optional<double>{};
    return gflops_per_s(forward ? layer->flops : backward_flops(*layer), forward ? l.forward_ms : l.backward_ms);
  };
  auto cell = [](std::optional<double> v) { return v ? fmt::format("{:.1f}", *v) : std::string("-"); };
  // A layer's forward and backward together against the dtype's peak (nullopt: no peak known,
  // or a layer without arithmetic).
  auto percent_of_peak = [&](const LayerBench& l) -> std::optional<double> {
    const Layer* layer = graph.find(l.name);
    if (!peak || !layer) return std::nullopt;
    std::int64_t flops = layer->flops + backward_flops(*layer);
    // A fused group's row ("fused with act1 (kiln kernel)") holds its activation's time too.
    if (l.detail.starts_with("fused with "))
      if (const Layer* act = graph.find(l.detail.substr(11, l.detail.find(' ', 11) - 11)))
        flops += act->flops + backward_flops(*act);
    auto v = gflops_per_s(flops, l.forward_ms + l.backward_ms);
    if (!v) return std::nullopt;
    return 100.0 * *v / (peak->tflops * 1e3);
  };
  // An epoch of CIFAR-10's 50,000 training images at the measured rate and at the floor.
  constexpr double kEpochImages = 50000.0;
  const double epoch_s = r.median_images_per_sec > 0 ? kEpochImages / r.median_images_per_sec : 0;

  if (o.json) {
    nlohmann::json j{{"model", spec.graph.name()}, {"backend", r.backend}, {"batch", r.batch}, {"threads", r.threads},
                     {"images_per_sec", r.median_images_per_sec}, {"repeats", r.images_per_sec},
                     {"gflop_per_image", static_cast<double>(step_flops) / 1e9}, {"tflops", step_tflops}};
    j["peak_tflops"] = peak ? nlohmann::json(peak->tflops) : nlohmann::json(nullptr);
    j["step_ms"] = step_ms;
    j["epoch_seconds_50k"] = epoch_s;
    if (peak) {
      j["floor_ms"] = floor_ms(1.0);
      j["floor_ms_half_peak"] = floor_ms(0.5);
      j["percent_of_peak"] = 100.0 * step_tflops / peak->tflops;
    }
    for (const auto& l : r.layers) {
      nlohmann::json layer{{"name", l.name}, {"op", l.op}, {"forward_ms", l.forward_ms}, {"backward_ms", l.backward_ms},
                           {"engine", l.detail}};
      if (auto v = per_layer(l, true)) layer["forward_gflops"] = *v;
      if (auto v = per_layer(l, false)) layer["backward_gflops"] = *v;
      if (auto v = percent_of_peak(l)) layer["percent_of_peak"] = *v;
      j["layers"].push_back(std::move(layer));
    }
    fmt::print("{}\n", j.dump(2));
  } else {
    fmt::print("{} on {}, batch {}\n", spec.graph.name(), r.backend, r.batch);
    fmt::print("{:<16} {:<16} {:>10} {:>10} {:>10} {:>10}{}\n", "layer", "op", "fwd ms", "bwd ms", "fwd GF/s", "bwd GF/s",
               peak ? fmt::format(" {:>7}", "% peak") : "");
    double fwd = 0, bwd = 0;
    for (const auto& l : r.layers) {
      const std::optional<double> pct = percent_of_peak(l);
      fmt::print("{:<16} {:<16} {:>10.3f} {:>10.3f} {:>10} {:>10}{}{}\n", l.name, l.op, l.forward_ms, l.backward_ms,
                 cell(per_layer(l, true)), cell(per_layer(l, false)),
                 peak ? fmt::format(" {:>7}", pct ? fmt::format("{:.1f}", *pct) : "-") : "",
                 l.detail.empty() ? "" : "  " + l.detail);
      fwd += l.forward_ms;
      bwd += l.backward_ms;
    }
    fmt::print("{:<16} {:<16} {:>10.3f} {:>10.3f}\n", "total", "", fwd, bwd);
    // The layers were timed one by one (an event wait each); the whole step, as it runs.
    fmt::print("step: {:.3f} ms measured whole ({}), {:.3f} ms summed over the layers timed one by one; an epoch of "
               "50,000 images {:.2f} s\n",
               step_ms, r.backend, fwd + bwd, epoch_s);
    std::string reps;
    for (double v : r.images_per_sec) reps += fmt::format(" {:.0f}", v);
    fmt::print("repetitions (img/s):{}\n", reps);
    fmt::print("FLOPs: {:.3f} GFLOP per image per training step (backward counted as 2x a conv's or linear's forward, 1x "
               "other layers'); {:.2f} TFLOP/s achieved at {:.0f} img/s\n",
               static_cast<double>(step_flops) / 1e9, step_tflops, r.median_images_per_sec);
    if (peak)
      fmt::print("peak: {:.1f} TFLOP/s ({}, dense, the {} datasheet): {:.1f}% achieved; the step's FLOP floor at batch {}: "
                 "{:.3f} ms at 100% of peak, {:.3f} ms at 50%; measured {:.3f} ms\n",
                 peak->tflops, peak->arithmetic, gpu, 100.0 * step_tflops / peak->tflops, r.batch, floor_ms(1.0),
                 floor_ms(0.5), step_ms);
    if (peak)
      fmt::print("epoch of 50,000 images: {:.2f} s measured, {:.2f} s at 100% of peak, {:.2f} s at 50%\n", epoch_s,
                 kEpochImages / static_cast<double>(r.batch) * floor_ms(1.0) / 1e3,
                 kEpochImages / static_cast<double>(r.batch) * floor_ms(0.5) / 1e3);
    else if (b.device == Backend::cuda)
      fmt::print("peak: '{}' is not in kiln's datasheet table (tools/kiln/flops.hpp): no % of peak or FLOP floor\n", gpu);
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
  app->add_flag("--no-cuda-graph", o->no_cuda_graph,
                "CUDA: time steps run kernel by kernel instead of replayed as a CUDA graph. Accepted and without effect "
                "on the CPU");
  app->add_flag("--no-fusion", o->no_fusion,
                "CUDA: batchnorm and the activation after it as two kernels each way. Accepted and without effect on the CPU");
  app->add_flag("--cudnn-fusion", o->cudnn_fusion,
                "CUDA: batchnorm + activation feeding a convolution in cuDNN's fused prologue where it has engines. "
                "Accepted and without effect on the CPU");
  commands.push_back({app, [o] { return run_bench(*o); }});
}

}  // namespace kiln::cli
