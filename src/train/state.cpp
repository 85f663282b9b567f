#include "train/state.hpp"

#include <fmt/format.h>

namespace kiln::detail {

namespace {

constexpr const char* kStateFormat = "kiln-train-state-1";

enum class Slot { weight, momentum, ema };

NamedTensor param_tensor(const Executor& executor, std::size_t i, const std::string& name, Slot slot) {
  const Param& p = executor.graph().params()[i];
  NamedTensor t;
  t.name = name;
  t.dims = p.dims;
  t.f32.resize(static_cast<std::size_t>(p.elements));
  if (slot == Slot::momentum) executor.read_momentum(i, t.f32);
  else if (slot == Slot::ema) executor.read_ema(i, t.f32);
  else executor.read_param(i, t.f32);
  return t;
}

}  // namespace

SafetensorsFile weights_file(const Executor& executor, std::int64_t batches_tracked) {
  SafetensorsFile file;
  const Graph& graph = executor.graph();
  auto params = graph.params();
  for (std::size_t i = 0; i < params.size(); ++i) {
    file.tensors.push_back(param_tensor(executor, i, params[i].name, Slot::weight));
    // PyTorch's BatchNorm state dict ends with num_batches_tracked; strict loading wants it.
    const Layer& layer = graph.layers()[static_cast<std::size_t>(params[i].layer)];
    if (params[i].role == ParamRole::running_var && layer.op == OpKind::batchnorm) {
      NamedTensor t;
      t.name = layer.name + ".num_batches_tracked";
      t.type = TensorType::i64;
      t.i64 = {batches_tracked};
      file.tensors.push_back(std::move(t));
    }
  }
  file.metadata["format"] = "pt";
  file.metadata["model"] = graph.name();
  return file;
}

void load_weights_file(Executor& executor, const SafetensorsFile& file, const std::string& path) {
  auto matched = match_weights(executor.graph(), file, path);
  for (std::size_t i = 0; i < matched.size(); ++i) executor.write_param(i, matched[i]->f32);
}

void save_train_state(const std::string& path, const Executor& executor, const RunPosition& position, std::uint64_t seed,
                      std::int64_t batch, bool ema) {
  SafetensorsFile file = weights_file(executor, position.step);
  auto params = executor.graph().params();
  for (std::size_t i = 0; i < params.size(); ++i)
    if (params[i].trainable) file.tensors.push_back(param_tensor(executor, i, params[i].name + ".momentum", Slot::momentum));
  if (ema)
    for (std::size_t i = 0; i < params.size(); ++i) file.tensors.push_back(param_tensor(executor, i, params[i].name + ".ema", Slot::ema));
  file.metadata["kiln"] = kStateFormat;
  file.metadata["step"] = std::to_string(position.step);
  file.metadata["epoch"] = std::to_string(position.epoch);
  file.metadata["batch_in_epoch"] = std::to_string(position.batch_in_epoch);
  file.metadata["seed"] = std::to_string(seed);
  file.metadata["batch"] = std::to_string(batch);
  write_safetensors(path, file);
}

RunPosition load_train_state(const std::string& path, Executor& executor, std::uint64_t seed, std::int64_t batch, bool ema) {
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
  const std::string& model = executor.graph().name();
  if (meta("model") != model)
    throw CheckpointError(path, fmt::format("{}: this training state belongs to model '{}', not '{}'", path, meta("model"), model));
  if (number("batch") != batch)
    throw CheckpointError(path, fmt::format("{}: was written with batch {}, this run uses batch {}; resume with --batch {}", path,
                                            number("batch"), batch, number("batch")));
  if (static_cast<std::uint64_t>(number("seed")) != seed)
    throw CheckpointError(path, fmt::format("{}: was written with seed {}, this run uses seed {}; resume with --seed {}", path,
                                            number("seed"), seed, number("seed")));

  // Weights first (every name and shape checked), then the momentum of each trainable one.
  SafetensorsFile weights;
  std::vector<std::string> missing;
  auto params = executor.graph().params();
  auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  for (auto& t : file.tensors)
    if (!ends_with(t.name, ".momentum") && !ends_with(t.name, ".ema")) weights.tensors.push_back(t);
  load_weights_file(executor, weights, path);
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (!params[i].trainable) continue;
    const NamedTensor* m = file.find(params[i].name + ".momentum");
    if (!m || m->f32.size() != static_cast<std::size_t>(params[i].elements)) {
      missing.push_back(params[i].name + ".momentum");
      continue;
    }
    executor.write_momentum(i, m->f32);
  }
  if (ema)
    for (std::size_t i = 0; i < params.size(); ++i) {
      const NamedTensor* e = file.find(params[i].name + ".ema");
      if (!e || e->f32.size() != static_cast<std::size_t>(params[i].elements)) {
        missing.push_back(params[i].name + ".ema");
        continue;
      }
      executor.write_ema(i, e->f32);
    }
  if (!missing.empty())
    throw CheckpointError(path, fmt::format("{}: optimizer state missing or of the wrong size for {}", path, fmt::join(missing, ", ")),
                          missing);
  return {number("step"), number("epoch"), number("batch_in_epoch")};
}

}  // namespace kiln::detail
