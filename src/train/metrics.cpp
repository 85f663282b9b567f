#include "train/metrics.hpp"

#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "kiln/error.hpp"
#include "kiln/train.hpp"

namespace kiln {

namespace {

// Insertion order (type first) reads better than nlohmann's sorted keys.
using Record = nlohmann::ordered_json;

Record optional_number(const std::optional<double>& x) { return x ? Record(*x) : Record(nullptr); }

}  // namespace

std::string metrics_record(const StepEvent& e) {
  Record j{{"type", "step"}, {"step", e.step}, {"epoch", e.epoch + 1}, {"loss", e.loss}, {"lr", e.lr}};
  if (e.loss_scale > 0) j["loss_scale"] = e.loss_scale, j["skipped"] = e.skipped;
  return j.dump();
}

std::string metrics_record(const EpochEvent& e) {
  Record j{{"type", "epoch"}, {"step", e.step}, {"epoch", e.epoch + 1}, {"train_loss", e.train_loss},
           {"train_accuracy", e.train_accuracy}};
  j["test_loss"] = optional_number(e.test_loss);
  j["test_accuracy"] = optional_number(e.test_accuracy);
  j["val_loss"] = optional_number(e.val_loss);
  j["val_accuracy"] = optional_number(e.val_accuracy);
  j["lr"] = e.lr;
  j["images_per_sec"] = e.images_per_sec;
  j["train_seconds"] = e.train_seconds;
  j["elapsed"] = e.elapsed_sec;
  if (e.loss_scale > 0) j["loss_scale"] = e.loss_scale, j["skipped_steps"] = e.skipped_steps;
  return j.dump();
}

std::string metrics_val_record(const EpochEvent& e) {
  if (!e.val_accuracy) return {};
  return Record{{"type", "val"}, {"step", e.step}, {"epoch", e.epoch + 1}, {"val_loss", optional_number(e.val_loss)},
                {"val_accuracy", *e.val_accuracy}}
      .dump();
}

namespace detail {

std::optional<double> keep_metrics_until(const std::filesystem::path& path, std::int64_t step) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string kept, line;
  std::optional<double> best;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer() || j["step"].get<std::int64_t>() > step)
      continue;
    kept += line + '\n';
    // best.safetensors follows validation accuracy when there is a validation split.
    const char* key = j.contains("val_accuracy") && j["val_accuracy"].is_number() ? "val_accuracy" : "test_accuracy";
    if (j.value("type", "") == "epoch" && j.contains(key) && j[key].is_number()) {
      const double accuracy = j[key].get<double>();
      if (!best || accuracy > *best) best = accuracy;
    }
  }
  in.close();
  // Written beside it and renamed over it: a kill now leaves the old file or the new one.
  const std::filesystem::path temp = path.string() + ".tmp";
  {
    std::ofstream out(temp, std::ios::out | std::ios::trunc);
    out << kept;
    out.flush();
    if (!out) throw Error(fmt::format("cannot write {}", temp.string()), ExitCode::runtime);
  }
  std::error_code ec;
  std::filesystem::rename(temp, path, ec);
  if (ec) throw Error(fmt::format("cannot replace {}: {}", path.string(), ec.message()), ExitCode::runtime);
  return best;
}

}  // namespace detail
}  // namespace kiln
