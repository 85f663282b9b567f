// kiln eval: accuracy, per-class accuracy and the confusion matrix of saved weights on the
// test split.
#include <fmt/format.h>

#include "cli.hpp"

namespace kiln::cli {

namespace {

struct EvalOptions {
  std::string model;
  std::string weights;
  std::string data;
  std::optional<std::int64_t> batch;
  std::string device = "auto";
  int threads = 0;
  bool json = false;
};

int run_eval(const EvalOptions& o) {
  Spec spec = load_spec(o.model);
  print_warnings(spec.graph);
  TrainConfig config = spec.train;
  if (o.batch) config.batch = *o.batch;
  RunOptions run;
  run.device = resolve_device(o.device, &run.device_index);
  run.threads = o.threads;
  run.init = o.weights;
  std::string description;
  Cifar10 data = resolve_data(o.data, false, description);
  check_dataset(spec.graph, data.test);
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
  fmt::print("{} with {} on {} ({} test images)\n", spec.graph.name(), o.weights, description, e.count);
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
  app->add_option("model", o->model, "Model spec (YAML)")->required();
  app->add_option("--weights", o->weights, "Weights (safetensors)")->required();
  app->add_option("--data", o->data, "CIFAR-10 binary directory (default: $KILN_CIFAR10_DIR or data/cifar-10-batches-bin)");
  app->add_option("--batch", o->batch, "Batch size")->check(positive());
  app->add_option("--device", o->device, "auto (default), cpu, cuda or cuda:N (a device index, see kiln info)")->check(device_choice());
  app->add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(positive());
  app->add_flag("--json", o->json, "Print JSON");
  commands.push_back({app, [o] { return run_eval(*o); }});
}

}  // namespace kiln::cli
