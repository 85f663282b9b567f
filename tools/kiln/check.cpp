// kiln check MODEL.yaml: validates a model, prints its layers, parameters, FLOPs and the
// memory plan; --target cuda also compiles it to cuDNN descriptors (no GPU needed).
#include <algorithm>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <optional>
#include <span>

#include "cli.hpp"

namespace kiln::cli {

namespace {

struct CheckOptions {
  std::string model;
  std::optional<std::int64_t> batch;
  std::string dtype = "fp32";
  std::optional<std::string> layout;  // nhwc for bf16/fp16 on CUDA, else nchw
  std::string target = "cpu";
  std::string data;
  std::string format, label;
  bool json = false;
  bool fold = false;
};

std::string shape_text(const Shape& s) { return s.is_image() ? s.str() : fmt::format("{}", s.c); }

nlohmann::json shape_json(const Shape& s) {
  return s.is_image() ? nlohmann::json::array({s.c, s.h, s.w}) : nlohmann::json::array({s.c});
}

// The options a layer's op reads, resolved (stride and `same` padding filled in): enough to
// rebuild the layer elsewhere (tools/reference/spec_torch.py builds the PyTorch model from it).
nlohmann::json attrs_json(const Layer& layer) {
  const Attrs& a = layer.attrs;
  auto pair = [](Hw v) { return nlohmann::json::array({v.h, v.w}); };
  const Hw stride = a.stride.value_or(Hw{1, 1});
  nlohmann::json j = nlohmann::json::object();
  switch (layer.op) {
    case OpKind::conv:
      j = {{"out", a.out},         {"kernel", pair(a.kernel)}, {"stride", pair(stride)}, {"dilation", pair(a.dilation)},
           {"groups", a.groups},   {"bias", a.bias},
           {"pad", nlohmann::json::array({a.pad.top, a.pad.bottom, a.pad.left, a.pad.right})}};
      break;
    case OpKind::maxpool:
    case OpKind::avgpool:
      j = {{"kernel", pair(a.kernel)}, {"stride", pair(stride)}, {"ceil", a.ceil},
           {"pad", nlohmann::json::array({a.pad.top, a.pad.bottom, a.pad.left, a.pad.right})}};
      break;
    case OpKind::batchnorm: j = {{"eps", a.eps}, {"momentum", a.momentum}, {"weight", a.weight}, {"bias", a.bias}}; break;
    case OpKind::groupnorm: j = {{"groups", a.groups}, {"eps", a.eps}}; break;
    case OpKind::linear: j = {{"out", a.out}, {"bias", a.bias}}; break;
    case OpKind::leaky_relu: j = {{"slope", a.slope}}; break;
    case OpKind::dropout: j = {{"p", a.p}}; break;
    case OpKind::scale: j = {{"factor", a.factor}}; break;
    case OpKind::upsample: j = {{"scale", pair(a.scale)}}; break;
    default: break;
  }
  return j;
}

int run_check(const CheckOptions& o) {
  auto dtype = parse_dtype(o.dtype);
  if (!dtype) throw UsageError(fmt::format("--dtype must be fp32, fp16 or bf16, got '{}'", o.dtype));
  const bool cuda = o.target == "cuda";
  // NHWC by default where tensor cores want it: bf16 and fp16 on a GPU.
  const std::string layout_name = o.layout ? *o.layout : cuda && *dtype != DType::f32 ? "nhwc" : "nchw";
  auto layout = parse_layout(layout_name);
  if (!layout) throw UsageError(fmt::format("--layout must be nchw or nhwc, got '{}'", layout_name));

  try {
    Spec spec = load_spec(o.model);
    const Graph& graph = spec.graph;
    print_warnings(graph);
    std::int64_t batch = o.batch.value_or(spec.train.batch);
    const Target target{cuda ? Backend::cuda : Backend::cpu, batch, *dtype, *layout};
    MemoryPlan plan = plan_memory(graph, target);
    if (!o.data.empty()) {
      std::string description;
      const Splits data = resolve_data(data_request(o.data, o.format, o.label, spec), false, description);
      check_data(graph, data);
    } else if (!o.format.empty() || !o.label.empty()) {
      throw UsageError("--format and --label describe --data: give --data DIR too");
    }
    std::optional<CudnnReport> cudnn;
    std::vector<std::string> no_engine;
    const bool on_gpu = cuda && cuda_device_count() > 0;
    if (cuda) cudnn = compile_cudnn(graph, Target{Backend::cuda, batch, *dtype, *layout});
    if (on_gpu) no_engine = cudnn_unsupported(graph, Target{Backend::cuda, batch, *dtype, *layout});
    // On a GPU, whether cuDNN has engines for the fused groups' graphs (the executor runs kiln's kernel either way).
    std::vector<std::string> fused_engines;
    if (on_gpu && cudnn && !cudnn->groups.empty())
      fused_engines = cudnn_fused_engines(graph, Target{Backend::cuda, batch, *dtype, *layout});

    auto layers = graph.layers();
    auto params_of = [&](const Layer& layer) {
      std::int64_t n = 0;
      for (int p : layer.params)
        if (!graph.params()[static_cast<std::size_t>(p)].buffer) n += graph.params()[static_cast<std::size_t>(p)].elements;
      return n;
    };
    auto act_bytes = [&](const Layer& layer) -> std::int64_t {
      return layer.op == OpKind::flatten ? 0 : batch * layer.shape.elements() * size_of(*dtype);
    };

    // Consecutive layers of one block instance, as one row (--fold).
    struct Row {
      std::string name, block;
      std::size_t first = 0;
      std::int64_t layers = 0, params = 0, flops = 0, bytes = 0;
      Shape shape;
    };
    auto folded = [&](std::span<const Layer> all) {
      std::vector<Row> out;
      for (const Layer& layer : all) {
        if (out.empty() || layer.instance.empty() || out.back().name != layer.instance) {
          Row r;
          r.name = layer.instance.empty() ? layer.name : layer.instance;
          r.block = layer.block;
          r.first = static_cast<std::size_t>(layer.index);
          out.push_back(std::move(r));
        }
        Row& r = out.back();
        r.layers += 1;
        r.params += params_of(layer);
        r.flops += layer.flops;
        r.bytes += act_bytes(layer);
        r.shape = layer.shape;
      }
      return out;
    };

    if (o.json) {
      nlohmann::json j;
      j["valid"] = no_engine.empty();  // --target cuda on a GPU: a layer cuDNN has no engine for
      j["model"] = graph.name();
      j["file"] = o.model;
      j["batch"] = batch;
      j["dtype"] = to_string(*dtype);
      j["layout"] = to_string(*layout);
      j["target"] = o.target;
      j["layers"] = nlohmann::json::array();
      for (const Layer& layer : layers) {
        nlohmann::json row{{"name", layer.name}, {"op", op_name(layer.op)}, {"output", shape_json(layer.shape)},
                           {"params", params_of(layer)}, {"flops", layer.flops}, {"activation_bytes", act_bytes(layer)}};
        row["inputs"] = nlohmann::json::array();
        for (int in : layer.inputs) row["inputs"].push_back(layers[static_cast<std::size_t>(in)].name);
        if (layer.loc.known()) row["line"] = layer.loc.line;
        if (!layer.instance.empty()) row["instance"] = layer.instance, row["block"] = layer.block;
        if (cudnn) {
          const CudnnLayerReport& c = cudnn->layers[static_cast<std::size_t>(layer.index)];
          row["cudnn"] = c.path;
          if (!c.group.empty()) row["group"] = c.group;
        }
        row["attrs"] = attrs_json(layer);
        j["layers"].push_back(row);
      }
      if (o.fold) {
        j["folded"] = nlohmann::json::array();
        for (const Row& r : folded(layers))
          j["folded"].push_back({{"name", r.name}, {"block", r.block}, {"layers", r.layers}, {"output", shape_json(r.shape)},
                                 {"params", r.params}, {"flops", r.flops}});
      }
      j["totals"] = {{"params", graph.parameter_count()}, {"flops_per_sample", graph.flops()}};
      j["memory"] = {{"param_bytes", plan.param_bytes},       {"grad_bytes", plan.grad_bytes},
                     {"activation_sum_bytes", plan.activation_sum}, {"activation_peak_bytes", plan.arena_bytes},
                     {"live_peak_bytes", plan.live_peak}, {"total_bytes", plan.total_bytes}};
      j["memory"]["blocks"] = nlohmann::json::array();
      for (const MemoryBlock& b : plan.blocks)
        j["memory"]["blocks"].push_back({{"name", b.name}, {"offset", b.offset}, {"bytes", b.bytes}});
      if (cuda) j["memory"]["sized_on_device"] = {"state", "workspace", "staging"};
      if (cudnn) {
        j["cudnn"] = {{"tensors", cudnn->tensors}, {"operations", cudnn->operations}};
        j["groups"] = nlohmann::json::array();
        for (const CudnnGroupReport& g : cudnn->groups)
          j["groups"].push_back({{"name", g.name}, {"kernel", g.kernel}, {"cudnn_graph", g.cudnn_graph}, {"reason", g.reason}});
      }
      if (on_gpu) j["no_engine"] = no_engine;
      if (on_gpu) j["fused_engines"] = fused_engines;
      j["warnings"] = nlohmann::json::array();
      for (const auto& w : graph.warnings()) j["warnings"].push_back(to_json(w));
      fmt::print("{}\n", j.dump(2));
      return no_engine.empty() ? 0 : 1;
    }

    // What a CUDA plan stores a layer's values in: its output and gradients in the plan's
    // dtype; in bf16/fp16 conv and linear weights as dtype copies of fp32 masters, norm
    // layers' parameters in fp32 (the CPU oracle's rule, backend/cpu_ops.hpp params_in_dtype).
    auto dtype_of = [&](const Layer& layer) {
      const std::string dt(to_string(*dtype));
      if (*dtype == DType::f32 || layer.params.empty()) return dt;
      if (layer.op == OpKind::conv || layer.op == OpKind::linear) return dt + ", weights " + dt;
      return dt + ", params fp32";
    };
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"layer", "op", "output", "params", "FLOPs", "activation"});
    if (cudnn) rows[0].push_back("dtype"), rows[0].push_back("cuDNN");
    if (o.fold) {
      // One row per block instance (the layers outside blocks as they are).
      for (const Row& r : folded(layers)) {
        std::vector<std::string> row{r.name, r.block.empty() ? std::string(op_name(layers[r.first].op)) : "block " + r.block,
                                     shape_text(r.shape), format_count(r.params), format_flops(r.flops),
                                     r.block.empty() && layers[r.first].op == OpKind::flatten ? "(view)" : format_bytes(r.bytes)};
        if (cudnn) {
          row.push_back(r.block.empty() ? dtype_of(layers[r.first]) : std::string(to_string(*dtype)));
          row.push_back(r.block.empty() ? cudnn->layers[r.first].path : fmt::format("{} layers", r.layers));
        }
        rows.push_back(std::move(row));
      }
    } else {
      for (const Layer& layer : layers) {
        std::vector<std::string> row{layer.name, std::string(op_name(layer.op)), shape_text(layer.shape),
                                     format_count(params_of(layer)), format_flops(layer.flops),
                                     layer.op == OpKind::flatten ? "(view)" : format_bytes(act_bytes(layer))};
        if (cudnn) {
          row.push_back(dtype_of(layer));
          row.push_back(cudnn->layers[static_cast<std::size_t>(layer.index)].path);
        }
        rows.push_back(std::move(row));
      }
    }
    rows.push_back({"total", "", "", format_count(graph.parameter_count()), format_flops(graph.flops()),
                    format_bytes(plan.activation_sum)});
    std::vector<std::size_t> width(rows[0].size(), 0);
    for (const auto& r : rows)
      for (std::size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
    fmt::print("{} ({}): batch {}, {}, {}, target {}\n", graph.name(), o.model, batch, to_string(*dtype), to_string(*layout),
               o.target);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      std::string line;
      for (std::size_t c = 0; c < r.size(); ++c) {
        bool numeric = c >= 3 && c <= 5;
        std::string cell = numeric ? fmt::format("{:>{}}", r[c], width[c]) : fmt::format("{:<{}}", r[c], width[c]);
        line += (c ? "  " : "") + cell;
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      fmt::print("{}\n", line);
      if (i == 0 || i + 2 == rows.size()) {
        std::size_t total = 0;
        for (auto w : width) total += w + 2;
        fmt::print("{}\n", std::string(total - 2, '-'));
      }
    }
    fmt::print("FLOPs are per sample, forward (a multiply-add counts 2); activations at batch {}\n", batch);
    fmt::print("memory (training, batch {}, {}): parameters {}, gradients {}, activations {} summed -> {} peak with reuse\n",
               batch, to_string(*dtype), format_bytes(plan.param_bytes), format_bytes(plan.grad_bytes),
               format_bytes(plan.activation_sum), format_bytes(plan.arena_bytes));
    std::vector<std::string> parts;
    for (const MemoryBlock& b : plan.blocks) parts.push_back(fmt::format("{} {}", b.name, format_bytes(b.bytes)));
    fmt::print("a {} run allocates {}: {}{}\n", o.target, format_bytes(plan.total_bytes), fmt::join(parts, ", "),
               cuda ? "; plus state, cuDNN workspace and staging, sized on the device" : "");
    if (cudnn)
      fmt::print("cuDNN {}: {} tensor and {} operation descriptors finalized for batch {}, {}, {}\n", build_description(),
                 cudnn->tensors, cudnn->operations, batch, to_string(*dtype), to_string(*layout));
    if (cudnn && !cudnn->groups.empty()) {
      fmt::print("fused groups ({}; --no-fusion at train or bench runs them apart):\n", cudnn->groups.size());
      for (const CudnnGroupReport& g : cudnn->groups) {
        fmt::print("  {}: fused, {}\n", g.name, g.kernel);
        if (!g.cudnn_graph.empty())
          fmt::print("    {}; {}\n    ({})\n", g.cudnn_graph, on_gpu ? "engines on this GPU below" : "engine unverified: no GPU",
                     g.reason);
      }
      for (const std::string& line : fused_engines) fmt::print("  cuDNN on this GPU: {}\n", line);
    }
    if (cuda && *dtype != DType::f32)
      fmt::print("mixed precision: activations, their gradients and conv/linear weights in {}; master weights, optimizer, "
                 "normalization statistics and the loss in fp32{} (the CPU oracle: --device cpu --dtype {})\n",
                 to_string(*dtype), *dtype == DType::f16 ? "; dynamic loss scaling" : "", to_string(*dtype));
    if (on_gpu) {
      if (no_engine.empty()) fmt::print("cuDNN on this GPU has an engine for every convolution pass\n");
      for (const auto& line : no_engine) fmt::print(stderr, "{}: error: {}\n", o.model, line);
    }
    if (!o.data.empty()) fmt::print("data {}: matches input {} and {} classes\n", o.data, graph.input_shape().str(), graph.classes());
    if (!no_engine.empty()) return 1;  // a layer the GPU cannot run: invalid for this target
    fmt::print("ok: {} is valid ({} layers, {} parameters)\n", o.model, layers.size() - 1, format_count(graph.parameter_count()));
    return 0;
  } catch (const GraphError& e) {
    if (o.json) {
      nlohmann::json j{{"valid", false}, {"file", o.model}, {"diagnostics", nlohmann::json::array()}};
      for (const auto& d : e.diagnostics()) j["diagnostics"].push_back(to_json(d));
      fmt::print("{}\n", j.dump(2));
    }
    throw;
  }
}

}  // namespace

void add_check(CLI::App& root, std::vector<Command>& commands) {
  auto o = std::make_shared<CheckOptions>();
  CLI::App* app = root.add_subcommand("check", "Validate a model spec and print its layers, parameters, FLOPs and memory plan");
  app->add_option("model", o->model, "Model spec (YAML)")->required();
  app->add_option("--batch", o->batch, "Batch size (default: the spec's train: batch, else 128)")->check(positive());
  app->add_option("--dtype", o->dtype, "Element type: fp32, fp16 or bf16")->capture_default_str();
  app->add_option("--layout", o->layout, "Activation layout: nchw or nhwc (default: nhwc for bf16/fp16 with --target cuda, else nchw)");
  app->add_option("--target", o->target, "Compile for: cpu, or cuda (cuDNN descriptors; needs no GPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app->add_option("--data", o->data, "A data directory (any format kiln reads) to check against the model's input and classes");
  app->add_option("--format", o->format, "--data's format: cifar10, cifar100, mnist or fashion-mnist (default: detected)");
  app->add_option("--label", o->label, "CIFAR-100: fine (default) or coarse");
  app->add_flag("--json", o->json, "Print the result as JSON");
  app->add_flag("--fold", o->fold, "One row per block instance (its output, parameters and FLOPs) instead of one per layer");
  commands.push_back({app, [o] { return run_check(*o); }});
}

}  // namespace kiln::cli
