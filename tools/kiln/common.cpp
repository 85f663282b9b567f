// What several commands share: finding the default model and the data.
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <fmt/format.h>
#include <unistd.h>

#include "cli.hpp"
#include "util/text.hpp"

namespace kiln::cli {

namespace fs = std::filesystem;

namespace {

fs::path executable_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path(".") : exe.parent_path();
}

// `relative` under the working directory, the executable's parent (a build tree), or the
// install prefix's share/kiln.
std::string find_file(const std::string& relative, const std::string& installed) {
  std::error_code ec;
  for (const fs::path& base : {fs::current_path(ec), executable_dir().parent_path()}) {
    if (fs::exists(base / relative, ec)) return (base / relative).string();
  }
  fs::path share = executable_dir().parent_path() / "share" / "kiln" / installed;
  if (fs::exists(share, ec)) return share.string();
  return {};
}

}  // namespace

std::string default_model() {
  std::string path = find_file("data/models/cifar_quick.yaml", "models/cifar_quick.yaml");
  return path.empty() ? "data/models/cifar_quick.yaml" : path;
}

namespace {

struct FormatPlaces {
  DataFormat format;
  const char* env;       // its environment variable
  const char* folder;    // under data/ (and share/kiln/ when installed)
  const char* marker;    // a file inside it that says it is there
  const char* system;    // a system-wide copy (a Debian package), or null
  const char* fetch;     // how to get it
};

constexpr FormatPlaces kPlaces[] = {
    {DataFormat::cifar10, "KILN_CIFAR10_DIR", "cifar-10-batches-bin", "data_batch_1.bin", nullptr, "tools/fetch-cifar10.sh"},
    {DataFormat::cifar100, "KILN_CIFAR100_DIR", "cifar-100-binary", "train.bin", nullptr, "tools/fetch-cifar100.sh"},
    {DataFormat::mnist, "KILN_MNIST_DIR", "mnist", "", nullptr, "tools/fetch-mnist.sh"},
    {DataFormat::fashion_mnist, "KILN_FASHION_MNIST_DIR", "fashion-mnist", "", "/usr/share/datasets/fashion-mnist",
     "tools/fetch-fashion-mnist.sh or apt-get install dataset-fashion-mnist"},
};

const FormatPlaces& places(DataFormat f) {
  for (const FormatPlaces& p : kPlaces)
    if (p.format == f) return p;
  return kPlaces[0];
}

// An IDX directory holds train-images-idx3-ubyte, plain or compressed.
bool holds(const fs::path& dir, const FormatPlaces& p) {
  std::error_code ec;
  if (*p.marker) return fs::exists(dir / p.marker, ec);
  return fs::exists(dir / "train-images-idx3-ubyte", ec) || fs::exists(dir / "train-images-idx3-ubyte.gz", ec);
}

}  // namespace

Splits synthetic_data(const DataRequest& want, std::string& description) {
  SynthOptions options;
  options.format = want.format ? *want.format : want.spec_format.value_or(DataFormat::cifar10);
  description = fmt::format("synthetic {} (kiln synth --format {}, seed 0)", format_name(options.format), format_name(options.format));
  Splits data = make_synthetic(options);
  data.train.source = data.test.source = "synthetic";
  return data;
}

DataFormat parse_format_flag(const std::string& text) {
  DataFormat f{};
  if (parse_format(text, f)) return f;
  const std::vector<std::string_view> names{"cifar10", "cifar100", "mnist", "fashion-mnist"};
  const std::string guess = detail::closest(text, names);
  throw UsageError(fmt::format("--format must be cifar10, cifar100, mnist or fashion-mnist, got '{}'{}", text,
                               guess.empty() ? "" : fmt::format("; did you mean '{}'?", guess)));
}

DataRequest data_request(const std::string& dir, const std::string& format, const std::string& label, const Spec& model) {
  const TrainConfig& spec = model.train;
  DataRequest r;
  r.sample = model.graph.input_shape();
  r.dir = dir;
  if (!format.empty()) r.format = parse_format_flag(format);
  r.spec_format = spec.format;
  r.label = spec.label;
  if (!label.empty()) {
    if (label != "fine" && label != "coarse") throw UsageError(fmt::format("--label must be fine or coarse, got '{}'", label));
    r.label = label == "coarse" ? Cifar100Label::coarse : Cifar100Label::fine;
    r.label_flag = true;
  }
  return r;
}

Splits resolve_data(const DataRequest& want, bool allow_synthetic, std::string& description, std::string* resolved_dir) {
  auto from = [&](const std::string& d, std::string what, std::optional<DataFormat> format) {
    LoadOptions options;
    options.detect = !format;
    if (format) options.format = *format;
    options.label = want.label;
    options.sample = want.sample;
    options.resize = want.resize;
    Splits data = load_data(d, options);
    if (want.label_flag && data.format != DataFormat::cifar100)
      throw UsageError(fmt::format("--label picks CIFAR-100's fine or coarse label; the data in '{}' is {}, which has one",
                                   d, format_name(data.format)));
    description = fmt::format("{} ({})", what, format_name(data.format));
    if (resolved_dir) *resolved_dir = d;
    return data;
  };
  if (!want.dir.empty()) return from(want.dir, want.dir, want.format);
  if (want.format == DataFormat::folder)
    throw UsageError("--format folder needs --data DIR: the folder of class folders to read");
  // Without a directory: the format asked for, else the one the model is for.
  const FormatPlaces& p = places(want.format ? *want.format : want.spec_format.value_or(DataFormat::cifar10));
  const DataFormat format = p.format;
  if (const char* env = std::getenv(p.env); env && *env) return from(env, fmt::format("{} ({})", env, p.env), format);
  std::error_code ec;
  for (const fs::path& base : {fs::current_path(ec), executable_dir().parent_path()})
    if (holds(base / "data" / p.folder, p)) return from((base / "data" / p.folder).string(), (base / "data" / p.folder).string(), format);
  if (p.system && holds(p.system, p)) return from(p.system, p.system, format);
  if (!allow_synthetic)
    throw UsageError(fmt::format("no {} data: give --data DIR, set {}, or get it with {}", format_name(format), p.env, p.fetch));
  fmt::print(stderr,
             "kiln: no {} found (--data, {}, data/{}{}{}):\n"
             "      training on a synthetic set made in memory; get the real one with {}\n",
             format_name(format), p.env, p.folder, p.system ? ", " : "", p.system ? p.system : "", p.fetch);
  if (resolved_dir) resolved_dir->clear();
  return synthetic_data(want, description);
}

std::optional<int> cuda_index(const std::string& device) {
  if (device == "cuda") return 0;
  if (device.rfind("cuda:", 0) != 0 || device.size() == 5 || device.size() > 9) return std::nullopt;
  int index = 0;
  for (char c : device.substr(5)) {
    if (c < '0' || c > '9') return std::nullopt;
    index = index * 10 + (c - '0');
  }
  return index;
}

Backend resolve_device(const std::string& device, int* index) {
  if (index) *index = 0;
  if (device == "cpu") return Backend::cpu;
  if (auto n = cuda_index(device)) {
    if (index) *index = *n;
    return Backend::cuda;
  }
  if (device != "auto")
    throw UsageError(fmt::format("--device must be auto, cpu, cuda or cuda:N (N a device index, see kiln info), got '{}'",
                                 device));
  return built_with_cuda() && cuda_device_count() > 0 ? Backend::cuda : Backend::cpu;
}

const CLI::Validator& device_choice() {
  static const CLI::Validator v(
      [](std::string& text) -> std::string {
        if (text == "auto" || text == "cpu" || cuda_index(text)) return {};
        return fmt::format("must be auto, cpu, cuda or cuda:N (N a device index, see kiln info), got '{}'", text);
      },
      "auto|cpu|cuda|cuda:N");
  return v;
}

namespace {

CLI::Validator number_at_least(double low, bool inclusive, const char* what) {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(text.c_str(), &end);
        const bool number = !text.empty() && end == text.c_str() + text.size() && errno == 0;
        if (number && (inclusive ? v >= low : v > low)) return {};
        return fmt::format("must be {}, got {}", what, text);
      },
      what);
}

}  // namespace

const CLI::Validator& positive() {
  static const CLI::Validator v = number_at_least(0, false, "a positive number");
  return v;
}

const CLI::Validator& non_negative() {
  static const CLI::Validator v = number_at_least(0, true, "a number of at least 0");
  return v;
}

}  // namespace kiln::cli
