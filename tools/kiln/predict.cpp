// kiln predict: the top classes of image files (PNG, JPEG) under a trained model, with
// the run's class names, input size and normalization.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <numeric>

#include "cli.hpp"
#include "run_record.hpp"

namespace kiln::cli {

namespace {

struct PredictOptions {
  std::string model;  // a run folder or a model spec
  std::vector<std::string> images;
  std::string weights;
  int top = 3;
  bool json = false;
  bool no_resize = false;
  std::string device = "auto";
  int threads = 0;
};

int run_predict(const PredictOptions& o) {
  namespace fs = std::filesystem;
  const std::optional<RunRecord> record = open_run_folder(o.model, "predict");
  const std::string weights = !o.weights.empty() ? o.weights : record ? (fs::path(o.model) / "model.safetensors").string() : "";
  if (weights.empty())
    throw UsageError(fmt::format("kiln predict: {} is a model spec: give its weights with --weights, or give a run folder "
                                 "(kiln train writes model.safetensors there)",
                                 o.model));
  Spec spec = load_spec(record ? record->model_file : o.model);
  print_warnings(spec.graph);
  TrainConfig config = spec.train;
  if (record) {  // what the run trained with
    config.mean = record->train.mean;
    config.std = record->train.std;
  } else if (!config.normalize_given && spec.graph.input_shape().c != static_cast<std::int64_t>(config.mean.size())) {
    throw UsageError(fmt::format("kiln predict: {} takes {}-channel images and has no normalize: in its train section; "
                                 "give the run folder kiln train wrote, which records the normalization it trained with",
                                 o.model, spec.graph.input_shape().c));
  }
  // Every file is read and decoded before the model is built: a bad one fails fast.
  const Shape input = spec.graph.input_shape();
  std::vector<std::uint8_t> pixels;
  for (const std::string& path : o.images) {
    const Image fitted = fit_image(decode_image(path), input, !o.no_resize, path);
    pixels.insert(pixels.end(), fitted.pixels.begin(), fitted.pixels.end());
  }
  config.batch = std::min<std::int64_t>(config.batch, std::max<std::size_t>(o.images.size(), 1));
  RunOptions run;
  run.device = resolve_device(o.device, &run.device_index);
  run.threads = o.threads;
  run.init = weights;
  Trainer trainer(spec.graph, config, run);
  const std::vector<float> logits = trainer.predict(pixels.data(), static_cast<std::int64_t>(o.images.size()));

  const auto K = static_cast<std::size_t>(spec.graph.classes());
  const std::vector<std::string> names = record ? record->class_names : std::vector<std::string>{};
  auto name = [&](std::size_t k) { return k < names.size() ? names[k] : fmt::format("class {}", k); };
  const std::size_t top = std::min<std::size_t>(static_cast<std::size_t>(o.top), K);
  nlohmann::json all = nlohmann::json::array();
  for (std::size_t i = 0; i < o.images.size(); ++i) {
    const float* row = logits.data() + i * K;
    // Softmax in double, shifted by the largest logit.
    const float peak = *std::max_element(row, row + K);
    std::vector<double> p(K);
    double sum = 0;
    for (std::size_t k = 0; k < K; ++k) sum += p[k] = std::exp(static_cast<double>(row[k]) - peak);
    for (double& v : p) v /= sum;
    std::vector<std::size_t> order(K);
    std::iota(order.begin(), order.end(), std::size_t{0});
    // Highest first; equal probabilities in class order, as argmax picks the first.
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return row[a] > row[b]; });
    if (o.json) {
      nlohmann::json classes = nlohmann::json::array();
      for (std::size_t r = 0; r < top; ++r)
        classes.push_back({{"class", name(order[r])}, {"index", order[r]}, {"probability", p[order[r]]}});
      all.push_back({{"file", o.images[i]}, {"top", classes}});
    } else {
      std::string line = o.images[i] + ":";
      for (std::size_t r = 0; r < top; ++r) line += fmt::format("{} {} {:.1f}%", r ? "," : "", name(order[r]), 100.0 * p[order[r]]);
      fmt::print("{}\n", line);
    }
  }
  if (o.json) fmt::print("{}\n", all.dump(2));
  return 0;
}

}  // namespace

void add_predict(CLI::App& root, std::vector<Command>& commands) {
  auto o = std::make_shared<PredictOptions>();
  CLI::App* app = root.add_subcommand("predict", "The top classes of image files (PNG, JPEG) under a trained model");
  app->add_option("model", o->model, "A run folder (its run.yaml gives the model, classes and normalization), or a model spec with --weights")
      ->required();
  app->add_option("images", o->images, "Image files (PNG or JPEG)")->required();
  app->add_option("--weights", o->weights, "Weights (safetensors; default for a run folder: its model.safetensors)");
  app->add_option("--top", o->top, "How many classes to show per image")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_flag("--json", o->json, "Print JSON: per file, its top classes with probabilities");
  app->add_flag("--no-resize", o->no_resize, "Refuse images whose size differs from the model's input instead of resizing them");
  app->add_option("--device", o->device, "auto (default), cpu, cuda or cuda:N (a device index, see kiln info)")->check(device_choice());
  app->add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(positive());
  commands.push_back({app, [o] { return run_predict(*o); }});
}

}  // namespace kiln::cli
