#include "run_record.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

namespace kiln::cli {

namespace fs = std::filesystem;

namespace {

std::string quoted(const std::string& s) { return nlohmann::json(s).dump(); }
std::string quoted_or_null(const std::string& s) { return s.empty() ? "null" : quoted(s); }

// Doubles as the shortest text that reads back to the same value.
std::string number(double v) { return fmt::format("{}", v); }

}  // namespace

std::string to_yaml(const RunRecord& r) {
  std::string command;
  for (const std::string& a : r.command) command += (command.empty() ? "" : ", ") + quoted(a);
  const TrainConfig& c = r.train;
  std::string names;
  for (const std::string& n : r.class_names) names += (names.empty() ? "" : ", ") + quoted(n);
  // Shortest round-trip text of each float: read back, they are the same floats.
  auto floats = [](const std::vector<float>& v) {
    std::string s;
    for (float x : v) s += fmt::format("{}{}", s.empty() ? "" : ", ", x);
    return s;
  };
  return fmt::format(
      "# Written by kiln train when the run started; `kiln train --resume DIR` reads it back.\n"
      "kiln: {{version: {}, commit: {}, build: {}}}\n"
      "command: [{}]\n"
      "cwd: {}\n"
      "model: {{file: {}, name: {}}}\n"
      "data: {{dir: {}, description: {}, fingerprint: {}, format: {}, label: {}, resize: {}}}\n"
      "val_split: {{count: {}, seed: {}}}\n"
      "classes: [{}]\n"
      "normalize: {{mean: [{}], std: [{}]}}\n"
      "device: {{backend: {}, layout: {}, dtype: {}, threads: {}, cpu_conv: {}}}\n"
      "train:\n"
      "  epochs: {}\n"
      "  steps: {}\n"
      "  batch: {}\n"
      "  lr: {}\n"
      "  momentum: {}\n"
      "  nesterov: {}\n"
      "  weight_decay: {}\n"
      "  label_smoothing: {}\n"
      "  augment: {{crop: {}, translate: {}, flip: {}, alternate_flip: {}}}\n"
      "  shuffle: {}\n"
      "  seed: {}\n"
      "  init: {}\n",
      quoted(r.version), quoted(r.commit), quoted(r.build), command, quoted(r.cwd), quoted(r.model_file), quoted(r.model_name),
      quoted_or_null(r.data_dir), quoted(r.data_description), quoted(r.data_fingerprint), quoted(r.data_format),
      quoted_or_null(r.data_label), r.resize, r.val_count, r.val_seed, names, floats(c.mean), floats(c.std), r.backend, r.layout, r.dtype,
      r.threads, r.cpu_conv, number(c.epochs), r.steps ? std::to_string(*r.steps) : "null", c.batch, number(c.lr), number(c.momentum),
      c.nesterov, number(c.weight_decay), number(c.label_smoothing), c.augment.crop, c.augment.translate, c.augment.flip,
      c.augment.alternate_flip, c.shuffle, c.seed, quoted_or_null(r.init));
}

RunRecord read_run_record(const std::string& path) {
  RunRecord r;
  try {
    const YAML::Node y = YAML::LoadFile(path);
    auto text = [](const YAML::Node& n) { return n && !n.IsNull() ? n.as<std::string>() : std::string(); };
    r.version = text(y["kiln"]["version"]);
    r.commit = text(y["kiln"]["commit"]);
    r.build = text(y["kiln"]["build"]);
    for (const auto& a : y["command"]) r.command.push_back(a.as<std::string>());
    r.cwd = text(y["cwd"]);
    r.model_file = text(y["model"]["file"]);
    r.model_name = text(y["model"]["name"]);
    r.data_dir = text(y["data"]["dir"]);
    r.data_description = text(y["data"]["description"]);
    r.data_fingerprint = text(y["data"]["fingerprint"]);
    if (const std::string f = text(y["data"]["format"]); !f.empty()) r.data_format = f;
    r.data_label = text(y["data"]["label"]);
    if (const YAML::Node n = y["data"]["resize"]) r.resize = n.as<bool>();
    if (const YAML::Node v = y["val_split"]) {
      r.val_count = v["count"].as<std::int64_t>();
      r.val_seed = v["seed"].as<std::uint64_t>();
    }
    for (const auto& n : y["classes"]) r.class_names.push_back(n.as<std::string>());
    if (const YAML::Node n = y["normalize"]) {
      r.train.mean = n["mean"].as<std::vector<float>>();
      r.train.std = n["std"].as<std::vector<float>>();
    }
    r.backend = text(y["device"]["backend"]);
    r.layout = text(y["device"]["layout"]);
    r.dtype = text(y["device"]["dtype"]);
    r.threads = y["device"]["threads"].as<int>();
    if (const YAML::Node n = y["device"]["cpu_conv"]) r.cpu_conv = text(n);
    const YAML::Node t = y["train"];
    TrainConfig& c = r.train;
    c.epochs = t["epochs"].as<double>();
    if (t["steps"] && !t["steps"].IsNull()) r.steps = t["steps"].as<std::int64_t>();
    c.batch = t["batch"].as<std::int64_t>();
    c.lr = t["lr"].as<double>();
    c.momentum = t["momentum"].as<double>();
    c.nesterov = t["nesterov"].as<bool>();
    c.weight_decay = t["weight_decay"].as<double>();
    c.label_smoothing = t["label_smoothing"].as<double>();
    c.augment.crop = t["augment"]["crop"].as<int>();
    c.augment.translate = t["augment"]["translate"].as<int>();
    c.augment.flip = t["augment"]["flip"].as<bool>();
    c.augment.alternate_flip = t["augment"]["alternate_flip"].as<bool>();
    c.shuffle = t["shuffle"].as<bool>();
    c.seed = t["seed"].as<std::uint64_t>();
    r.init = text(t["init"]);
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("{}: not a run record kiln can read ({})\n    hint: it is written by kiln train; to start "
                            "over, train into a new --out",
                            path, e.what()),
                ExitCode::invalid_input);
  }
  if (DataFormat f{}; !parse_format(r.data_format, f))
    throw Error(fmt::format("{}: data format '{}' is not one kiln reads (cifar10, cifar100, mnist, fashion-mnist)\n    hint: "
                            "it is written by kiln train; to start over, train into a new --out",
                            path, r.data_format),
                ExitCode::invalid_input);
  // A resume and eval parse these; an edited value must not reach them unchecked.
  if (!parse_layout(r.layout) || !parse_cpu_conv(r.cpu_conv) || !parse_dtype(r.dtype))
    throw Error(fmt::format("{}: device: layout '{}', cpu_conv '{}' and dtype '{}' must be nchw or nhwc, auto, kiln or onednn, "
                            "and fp32, bf16 or fp16\n"
                            "    hint: it is written by kiln train; to start over, train into a new --out",
                            path, r.layout, r.cpu_conv, r.dtype),
                ExitCode::invalid_input);
  if (r.model_file.empty())
    throw Error(fmt::format("{}: names no model file (model: file is empty)\n    hint: kiln train writes it; this one was "
                            "edited or cut short. To start over, train into a new --out",
                            path),
                ExitCode::invalid_input);
  return r;
}

std::optional<RunRecord> open_run_folder(const std::string& path, const char* command) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return std::nullopt;
  const fs::path file = fs::path(path) / "run.yaml";
  if (!fs::exists(file, ec))
    throw UsageError(fmt::format("kiln {}: {} is a directory without a run.yaml: give a run folder (written by kiln train) "
                                 "or a model spec with --weights",
                                 command, path));
  return read_run_record(file.string());
}

void write_run_record(const std::string& dir, const RunRecord& r) {
  fs::create_directories(dir);
  const fs::path path = fs::path(dir) / "run.yaml", tmp = fs::path(dir) / ".run.yaml.tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << to_yaml(r);
    if (!f.flush()) throw Error(fmt::format("cannot write {}", tmp.string()), ExitCode::runtime);
  }
  fs::rename(tmp, path);
}

std::string data_fingerprint(const std::string& dir) {
  // Every regular file below `dir`: a file of `dir` itself is an entry of its own ("name size
  // hash", the binary formats' files); the files of a subfolder (an image folder's class)
  // make one entry, "sub/folder/ (N files) size hash", over their names and bytes.
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file(ec)) files.push_back(fs::relative(it->path(), dir, ec));
  std::sort(files.begin(), files.end());
  struct Entry {
    std::uint64_t hash = 14695981039346656037ull, size = 0, count = 0;
  };
  std::map<std::string, Entry> entries;
  std::vector<char> buffer(1 << 20);
  for (const fs::path& f : files) {
    const std::string parent = f.parent_path().string();
    const std::string key = parent.empty() ? f.string() : parent + "/";
    Entry& e = entries[key];
    auto mix = [&](const char* p, std::size_t n) {
      for (std::size_t i = 0; i < n; ++i) e.hash = (e.hash ^ static_cast<unsigned char>(p[i])) * 1099511628211ull;
    };
    if (!parent.empty()) mix(f.filename().c_str(), f.filename().string().size() + 1);  // names count in a folder
    std::FILE* in = std::fopen((fs::path(dir) / f).c_str(), "rb");
    if (!in) continue;
    ++e.count;
    for (std::size_t n; (n = std::fread(buffer.data(), 1, buffer.size(), in)) > 0;) {
      e.size += n;
      mix(buffer.data(), n);
    }
    std::fclose(in);
  }
  std::string out;
  for (const auto& [key, e] : entries)
    out += key.back() == '/' ? fmt::format("{}{} ({} files) {} {:016x}", out.empty() ? "" : "; ", key, e.count, e.size, e.hash)
                             : fmt::format("{}{} {} {:016x}", out.empty() ? "" : "; ", key, e.size, e.hash);
  return out;
}

}  // namespace kiln::cli
