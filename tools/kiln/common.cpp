// What several commands share: finding the default model and the data.
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <fmt/format.h>
#include <unistd.h>

#include "cli.hpp"

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

Cifar10 synthetic_data(std::string& description) {
  description = "synthetic (kiln synth, seed 0)";
  Cifar10 data = make_synthetic_cifar10({});
  data.train.source = "synthetic";
  data.test.source = "synthetic";
  return data;
}

Cifar10 resolve_data(const std::string& dir, bool allow_synthetic, std::string& description, std::string* resolved_dir) {
  auto from = [&](const std::string& d, std::string what) {
    description = std::move(what);
    if (resolved_dir) *resolved_dir = d;
    return load_cifar10(d);
  };
  if (!dir.empty()) return from(dir, dir);
  if (const char* env = std::getenv("KILN_CIFAR10_DIR"); env && *env) return from(env, fmt::format("{} (KILN_CIFAR10_DIR)", env));
  std::string local = find_file("data/cifar-10-batches-bin/data_batch_1.bin", "cifar-10-batches-bin/data_batch_1.bin");
  if (!local.empty()) {
    const std::string d = fs::path(local).parent_path().string();
    return from(d, d);
  }
  if (!allow_synthetic)
    throw UsageError("no data: give --data DIR, set KILN_CIFAR10_DIR, or get CIFAR-10 with tools/fetch-cifar10.sh");
  fmt::print(stderr,
             "kiln: no CIFAR-10 found (--data, KILN_CIFAR10_DIR, data/cifar-10-batches-bin):\n"
             "      training on a synthetic set made in memory; get CIFAR-10 with tools/fetch-cifar10.sh\n");
  if (resolved_dir) resolved_dir->clear();
  return synthetic_data(description);
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
