// The dataset formats by name, their detection from a directory's files, and the entry
// points that dispatch on them (load_data, write_data).
#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>
#include <fmt/format.h>

#include "data/data_files.hpp"
#include "kiln/data.hpp"
#include "kiln/error.hpp"

namespace kiln {

namespace fs = std::filesystem;

namespace {

constexpr std::array<DataFormat, 5> kFormats = {DataFormat::cifar10, DataFormat::cifar100, DataFormat::mnist,
                                                DataFormat::fashion_mnist, DataFormat::folder};
// How many of a directory's entries a detection error lists.
constexpr std::size_t kListed = 8;

// Whether the last component of `dir` says "fashion", in any case.
bool names_fashion(const std::string& dir) {
  fs::path path = fs::path(dir).lexically_normal();
  if (!path.has_filename()) path = path.parent_path();  // "data/fashion/" -> "data/fashion"
  if (path.empty() || path == ".") path = fs::current_path();
  std::string name = path.filename().string();
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return name.find("fashion") != std::string::npos;
}

// Whether `dir` has a subdirectory holding a .png/.jpg/.jpeg file (an image folder's class).
bool holds_class_folders(const fs::path& dir) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    for (fs::directory_iterator f(it->path(), ec); !ec && f != end; f.increment(ec))
      if (detail::image_extension(f->path())) return true;
    ec.clear();
  }
  return false;
}

// The first kListed entries of `dir` in name order, and how many there are.
std::string listing(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (it->is_directory(ec)) name += "/";
    names.push_back(name);
  }
  if (ec) return fmt::format("(cannot list it: {})", ec.message());
  if (names.empty()) return "nothing (the directory is empty)";
  std::sort(names.begin(), names.end());
  std::size_t total = names.size();
  if (total > kListed) names.resize(kListed);
  return fmt::format("{}{}", fmt::join(names, ", "), total > kListed ? fmt::format(", … ({} entries)", total) : "");
}

}  // namespace

const char* format_name(DataFormat format) {
  switch (format) {
    case DataFormat::cifar10: return "cifar10";
    case DataFormat::cifar100: return "cifar100";
    case DataFormat::mnist: return "mnist";
    case DataFormat::fashion_mnist: return "fashion-mnist";
    case DataFormat::folder: return "folder";
  }
  return "unknown";
}

bool parse_format(const std::string& name, DataFormat& format) {
  for (DataFormat f : kFormats)
    if (name == format_name(f)) {
      format = f;
      return true;
    }
  return false;
}

DataFormat detect_format(const std::string& dir) {
  using detail::present;
  const fs::path root(dir);
  detail::require_directory(dir, "data", "a dataset's files",
                            "get one with tools/fetch-cifar10.sh (or fetch-cifar100.sh, fetch-mnist.sh, "
                            "fetch-fashion-mnist.sh), or make a synthetic set with kiln synth --out DIR");
  if (present(root / "data_batch_1.bin") || present(root / "test_batch.bin")) return DataFormat::cifar10;
  if (present(root / "train.bin") || present(root / "test.bin")) return DataFormat::cifar100;
  for (const char* name : {"train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte",
                           "t10k-images-idx3-ubyte.gz"})
    if (present(root / name)) return names_fashion(dir) ? DataFormat::fashion_mnist : DataFormat::mnist;
  if (holds_class_folders(root / "train") || holds_class_folders(root)) return DataFormat::folder;
  throw DataError(dir, -1,
                  fmt::format("cannot tell the dataset format of '{}': looked for data_batch_1.bin (CIFAR-10), train.bin "
                              "and test.bin (CIFAR-100), train-images-idx3-ubyte[.gz] (MNIST; Fashion-MNIST when the "
                              "directory's name says \"fashion\"), class folders of PNG/JPEG files (an image folder), and found {}\n    hint: point --data at the directory "
                              "that holds the files themselves, or name the format with --format",
                              dir, listing(dir)));
}

Splits load_data(const std::string& dir, const LoadOptions& options) {
  const DataFormat format = options.detect ? detect_format(dir) : options.format;
  switch (format) {
    case DataFormat::cifar10: return load_cifar10(dir);
    case DataFormat::cifar100: return load_cifar100(dir, options.label);
    case DataFormat::mnist:
    case DataFormat::fashion_mnist: return load_idx(dir, format);
    case DataFormat::folder: return load_image_folder(dir, options);
  }
  throw UsageError(fmt::format("load_data: unknown data format {}", static_cast<int>(format)));
}

void write_data(const Splits& data, const std::string& dir) {
  switch (data.format) {
    case DataFormat::cifar10: return write_cifar10(data, dir);
    case DataFormat::cifar100: return detail::write_cifar100(data, dir);
    case DataFormat::mnist:
    case DataFormat::fashion_mnist: return detail::write_idx(data, dir);
    case DataFormat::folder: break;
  }
  if (data.format == DataFormat::folder)
    throw UsageError("write_data: kiln reads image folders but does not write them (write PNG files yourself)");
  throw UsageError(fmt::format("write_data: unknown data format {}", static_cast<int>(data.format)));
}

}  // namespace kiln
