// kiln eval: accuracy, per-class accuracy and the confusion matrix of saved weights on the
// test split, of a run folder (its model, data, format and normalization from run.yaml) or
// of a model spec with --weights.
#include <filesystem>
#include <fmt/format.h>

#include "cli.hpp"
#include "run_record.hpp"

namespace kiln::cli {

namespace {

struct EvalOptions {
  std::string model;
  std::string weights;
  std::string data;
  std::string format, label;
  std::optional<std::int64_t> batch;
  std::string device = "auto";
  int threads = 0;
  std::optional<std::string> cpu_conv;  // auto; a run folder: the run's
  std::optional<std::string> dtype;     // the spec's, else fp32; a run folder: the run's
  bool json = false;
};

int run_eval(const EvalOptions& o) {
  namespace fs = std::filesystem;
  // A run folder says everything: its model, data (format, label), normalization and weights.
  const std::optional<RunRecord> record = open_run_folder(o.model, "eval");
  const std::string model = record ? record->model_file : o.model;
  const std::string weights = !o.weights.empty() ? o.weights : record ? (fs::path(o.model) / "model.safetensors").string() : "";
  if (weights.empty()) throw UsageError(fmt::format("--weights is needed with a model spec ({}); a run folder has its own", o.model));
  Spec spec = load_spec(model);
  print_warnings(spec.graph);
  TrainConfig config = spec.train;
  if (record) config.batch = record->train.batch;  // the batch the run evaluated with
  if (o.batch) config.batch = *o.batch;
  RunOptions run;
  run.device = resolve_device(o.device, &run.device_index);
  run.threads = o.threads;
  run.cpu_conv = *parse_cpu_conv(o.cpu_conv ? *o.cpu_conv : record ? record->cpu_conv : "auto");
  // The number type the run trained (and evaluated) in, unless told otherwise.
  const std::string dtype = o.dtype          ? *o.dtype
                            : record         ? record->dtype
                            : config.dtype   ? std::string(to_string(*config.dtype))
                                             : "fp32";
  run.dtype = *parse_dtype(dtype);
  config.dtype = run.dtype;
  run.init = weights;
  std::string description;
  DataRequest want = data_request(!o.data.empty() ? o.data : record ? record->data_dir : "", o.format, o.label, spec);
  if (record && o.format.empty()) want.format = parse_format_flag(record->data_format);
  if (record) want.resize = record->resize;
  if (record && o.label.empty() && !record->data_label.empty())
    want.label = record->data_label == "coarse" ? Cifar100Label::coarse : Cifar100Label::fine;
  // A run on the synthetic set is evaluated on the same synthetic set.
  Splits data = record && want.dir.empty() ? synthetic_data(want, description) : resolve_data(want, false, description);
  if (data.test.size() == 0)
    throw Error(fmt::format("{} has no test split to evaluate (an image folder of one level of class folders; arrange it "
                            "as DIR/train/<class>/ and DIR/test/<class>/)",
                            data.train.source),
                ExitCode::invalid_input);
  check_data(spec.graph, data);
  if (record) {  // what the run trained with
    config.mean = record->train.mean;
    config.std = record->train.std;
  } else if (!config.normalize_given) {
    const ChannelStats s = default_normalization(data);
    config.mean = s.mean;
    config.std = s.std;
  }
  Trainer trainer(spec.graph, config, run);
  Evaluation e = trainer.evaluate(data.test);
  const auto& names = data.test.class_names;
  auto name = [&](std::size_t k) { return k < names.size() ? names[k] : fmt::format("class {}", k); };
  if (o.json) {
    nlohmann::json j{{"accuracy", e.accuracy}, {"loss", e.loss}, {"count", e.count}, {"class_accuracy", e.class_accuracy},
                     {"confusion", e.confusion}};
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  fmt::print("{} with {} on {} ({} test images)\n", spec.graph.name(), weights, description, e.count);
  fmt::print("accuracy {:.2f}%  loss {:.4f}\n", 100.0 * e.accuracy, e.loss);
  for (std::size_t k = 0; k < e.class_accuracy.size(); ++k) fmt::print("  {:<12} {:6.2f}%\n", name(k), 100.0 * e.class_accuracy[k]);
  fmt::print("confusion matrix (rows: true class, columns: predicted)\n");
  for (std::size_t k = 0; k < e.confusion.size(); ++k) {
    std::string row = fmt::format("  {:<12}", name(k));
    for (auto c : e.confusion[k]) row += fmt::format(" {:>5}", c);
    fmt::print("{}\n", row);
  }
  return 0;
}

}  // namespace

void add_eval(CLI::App& root, std::vector<Command>& commands) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* app = root.add_subcommand("eval", "Evaluate saved weights on the test split");
  app->add_option("model", o->model, "A run folder (its run.yaml says the rest), or a model spec (YAML) with --weights")->required();
  app->add_option("--weights", o->weights, "Weights (safetensors; default for a run folder: its model.safetensors)");
  app->add_option("--data", o->data, "Data directory (default: the run's, else the format's $KILN_*_DIR or data/ folder)");
  app->add_option("--format", o->format, "The data's format: cifar10, cifar100, mnist or fashion-mnist (default: detected)");
  app->add_option("--label", o->label, "CIFAR-100: fine (default) or coarse");
  app->add_option("--batch", o->batch, "Batch size")->check(positive());
  app->add_option("--device", o->device, "auto (default), cpu, cuda or cuda:N (a device index, see kiln info)")->check(device_choice());
  app->add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(positive());
  app->add_option("--dtype", o->dtype, "fp32, bf16 or fp16 (default: a run folder's, else the spec's train: dtype, else fp32)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  app->add_option("--cpu-conv", o->cpu_conv, "CPU convolution kernels: auto (default; a run folder: the run's), kiln or onednn")
      ->check(CLI::IsMember({"auto", "kiln", "onednn"}));
  app->add_flag("--json", o->json, "Print JSON");
  commands.push_back({app, [o] { return run_eval(*o); }});
}

}  // namespace kiln::cli
