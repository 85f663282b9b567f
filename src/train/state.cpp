#include "train/state.hpp"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace kiln::detail {

namespace {

constexpr const char* kStateFormat = "kiln-train-state-1";

}  // namespace

void save_train_state(const std::string& path, const CompiledPlan& plan, const RunPosition& position, std::uint64_t seed,
                      std::int64_t batch, bool ema) {
  SafetensorsFile file = weights_file(plan, position.step);
  auto params = plan.graph().params();
  for (std::size_t i = 0; i < params.size(); ++i)
    if (params[i].trainable) file.tensors.push_back(param_tensor(plan, i, params[i].name + ".momentum", ParamSlot::momentum));
  if (ema)
    for (std::size_t i = 0; i < params.size(); ++i) file.tensors.push_back(param_tensor(plan, i, params[i].name + ".ema", ParamSlot::ema));
  file.metadata["kiln"] = kStateFormat;
  file.metadata["step"] = std::to_string(position.step);
  file.metadata["epoch"] = std::to_string(position.epoch);
  file.metadata["batch_in_epoch"] = std::to_string(position.batch_in_epoch);
  file.metadata["seed"] = std::to_string(seed);
  file.metadata["batch"] = std::to_string(batch);
  file.metadata["dtype"] = std::string(to_string(plan.dtype()));
  if (plan.dtype() == DType::f16) {
    // A power of two in shortest round-trip form: read back exactly.
    file.metadata["loss_scale"] = fmt::format("{}", plan.loss_scale().scale);
    file.metadata["loss_scale_good_steps"] = std::to_string(plan.loss_scale().good_steps);
  }
  write_safetensors(path, file);
}

RunPosition load_train_state(const std::string& path, CompiledPlan& plan, std::uint64_t seed, std::int64_t batch, bool ema) {
  SafetensorsFile file = read_safetensors(path);
  auto meta = [&](const char* key) -> std::string {
    auto it = file.metadata.find(key);
    if (it == file.metadata.end())
      throw CheckpointError(path, fmt::format("{}: not a kiln training state (no '{}' in its metadata)", path, key));
    return it->second;
  };
  auto number = [&](const char* key) -> std::int64_t {
    std::string text = meta(key);
    try {
      std::size_t used = 0;
      long long v = std::stoll(text, &used);
      if (used != text.size() || v < 0) throw std::invalid_argument(key);
      return v;
    } catch (const std::exception&) {
      throw CheckpointError(path, fmt::format("{}: metadata '{}' is not a count: '{}'", path, key, text));
    }
  };
  if (meta("kiln") != kStateFormat)
    throw CheckpointError(path, fmt::format("{}: unknown training-state format '{}'", path, meta("kiln")));
  const std::string& model = plan.graph().name();
  if (meta("model") != model)
    throw CheckpointError(path, fmt::format("{}: this training state belongs to model '{}', not '{}'", path, meta("model"), model));
  if (number("batch") != batch)
    throw CheckpointError(path, fmt::format("{}: was written with batch {}, this run uses batch {}; resume with --batch {}", path,
                                            number("batch"), batch, number("batch")));
  if (static_cast<std::uint64_t>(number("seed")) != seed)
    throw CheckpointError(path, fmt::format("{}: was written with seed {}, this run uses seed {}; resume with --seed {}", path,
                                            number("seed"), seed, number("seed")));

  // Written before dtypes were recorded: fp32.
  const std::string dtype = file.metadata.count("dtype") ? file.metadata.at("dtype") : "fp32";
  if (dtype != to_string(plan.dtype()))
    throw CheckpointError(path, fmt::format("{}: was written by a {} run, this run is {}; resume with --dtype {}", path, dtype,
                                            to_string(plan.dtype()), dtype));
  if (plan.dtype() == DType::f16) {
    const std::string text = meta("loss_scale");
    float scale = 0;
    try {
      std::size_t used = 0;
      scale = std::stof(text, &used);
      if (used != text.size()) throw std::invalid_argument("loss_scale");
    } catch (const std::exception&) {
      scale = 0;
    }
    if (!(scale > 0) || !std::isfinite(scale))
      throw CheckpointError(path, fmt::format("{}: metadata 'loss_scale' is not a positive number: '{}'\n    hint: kiln train "
                                              "writes it; the file was edited or damaged. To start over, train into a new --out",
                                              path, text));
    plan.set_loss_scale({scale, number("loss_scale_good_steps")});
  }

  // Weights first (every name and shape checked), then the momentum of each trainable one.
  SafetensorsFile weights;
  std::vector<std::string> missing;
  auto params = plan.graph().params();
  auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  for (auto& t : file.tensors)
    if (!ends_with(t.name, ".momentum") && !ends_with(t.name, ".ema")) weights.tensors.push_back(t);
  load_weights_file(plan, weights, path);
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (!params[i].trainable) continue;
    const NamedTensor* m = file.find(params[i].name + ".momentum");
    if (!m || m->f32.size() != static_cast<std::size_t>(params[i].elements)) {
      missing.push_back(params[i].name + ".momentum");
      continue;
    }
    plan.write_momentum(i, m->f32);
  }
  if (ema)
    for (std::size_t i = 0; i < params.size(); ++i) {
      const NamedTensor* e = file.find(params[i].name + ".ema");
      if (!e || e->f32.size() != static_cast<std::size_t>(params[i].elements)) {
        missing.push_back(params[i].name + ".ema");
        continue;
      }
      plan.write_ema(i, e->f32);
    }
  if (!missing.empty())
    throw CheckpointError(path, fmt::format("{}: optimizer state missing or of the wrong size for {}", path, fmt::join(missing, ", ")),
                          missing);
  return {number("step"), number("epoch"), number("batch_in_epoch")};
}

}  // namespace kiln::detail
