// CIFAR-10 binary reader: data_batch_1..5.bin, test_batch.bin, batches.meta.txt. Every
// file is validated before anything is returned, so training never starts on bad data.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>

#include "kiln/data.hpp"
#include "kiln/format.hpp"

namespace kiln {

namespace fs = std::filesystem;

namespace {

constexpr const char* kTrainFiles[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                                       "data_batch_5.bin"};
constexpr const char* kTestFile = "test_batch.bin";
constexpr const char* kGetHint =
    "get CIFAR-10 with tools/fetch-cifar10.sh, or make a synthetic set in the same format with kiln synth --out DIR";

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (fs::is_directory(status)) throw DataError(path, -1, fmt::format("{}: is a directory, not a CIFAR-10 batch file", path));
  // Opening a FIFO would wait for a writer forever: refuse anything but a file before opening.
  if (fs::exists(status) && !fs::is_regular_file(status))
    throw DataError(path, -1, fmt::format("{}: cannot read: not a regular file", path));
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw DataError(path, -1, fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
  const std::streamoff size = in.tellg();
  if (size < 0) throw DataError(path, -1, fmt::format("{}: cannot read: not a regular file", path));
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  in.seekg(0);
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size))
    throw DataError(path, -1, fmt::format("{}: read failed: {}", path, std::strerror(errno)));
  return bytes;
}

void append_batch(const std::string& path, Dataset& out) {
  std::vector<std::uint8_t> bytes = read_file(path);
  auto size = static_cast<std::int64_t>(bytes.size());
  if (size == 0) throw DataError(path, -1, fmt::format("{}: is empty (0 bytes); a CIFAR-10 batch holds 3,073-byte records", path));
  if (size % cifar10_record_bytes != 0) {
    std::int64_t whole = size / cifar10_record_bytes;
    throw DataError(path, whole,
                    fmt::format("{}: {} bytes is not a whole number of 3,073-byte records: record {} is truncated "
                                "({} of 3,073 bytes); the file is cut short or not CIFAR-10 binary",
                                path, format_count(size), whole, size - whole * cifar10_record_bytes));
  }
  std::int64_t records = size / cifar10_record_bytes;
  const std::int64_t pixels = cifar10_record_bytes - 1;
  for (std::int64_t r = 0; r < records; ++r) {
    std::uint8_t label = bytes[static_cast<std::size_t>(r * cifar10_record_bytes)];
    if (label >= 10)
      throw DataError(path, r,
                      fmt::format("{}: record {} (byte offset {}) has label {}; CIFAR-10 labels are 0..9", path, r,
                                  format_count(r * cifar10_record_bytes), label));
  }
  std::size_t base = out.images.size();
  out.images.resize(base + static_cast<std::size_t>(records * pixels));
  out.labels.reserve(out.labels.size() + static_cast<std::size_t>(records));
  for (std::int64_t r = 0; r < records; ++r) {
    const std::uint8_t* rec = bytes.data() + r * cifar10_record_bytes;
    out.labels.push_back(rec[0]);
    std::memcpy(out.images.data() + base + static_cast<std::size_t>(r * pixels), rec + 1, static_cast<std::size_t>(pixels));
  }
}

std::vector<std::string> read_class_names(const std::string& path) {
  std::vector<std::string> names;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

// Whether `path` exists. A search permission denied on the way is not "missing": it says so.
bool present(const fs::path& path) {
  std::error_code ec;
  bool there = fs::exists(path, ec);
  if (ec) throw DataError(path.string(), -1, fmt::format("{}: cannot read: {}", path.string(), ec.message()));
  return there;
}

}  // namespace

Cifar10 load_cifar10(const std::string& dir) {
  std::error_code ec;
  if (!present(dir))
    throw DataError(dir, -1, fmt::format("CIFAR-10 directory '{}' does not exist\n    hint: {}", dir, kGetHint));
  if (!fs::is_directory(dir, ec))
    throw DataError(dir, -1,
                    fmt::format("'{}' is not a directory; --data names the directory holding data_batch_1.bin … "
                                "test_batch.bin",
                                dir));
  std::vector<std::string> missing;
  for (const char* f : kTrainFiles)
    if (!present(fs::path(dir) / f)) missing.emplace_back(f);
  if (!present(fs::path(dir) / kTestFile)) missing.emplace_back(kTestFile);
  if (!missing.empty())
    throw DataError(dir, -1,
                    fmt::format("'{}' is not a CIFAR-10 binary directory: missing {} (expected data_batch_1.bin … "
                                "data_batch_5.bin and test_batch.bin, the \"CIFAR-10 binary version\")\n    hint: {}",
                                dir, fmt::join(missing, ", "), kGetHint));

  Cifar10 data;
  data.train.source = dir;
  data.test.source = dir;
  for (const char* f : kTrainFiles) append_batch((fs::path(dir) / f).string(), data.train);
  append_batch((fs::path(dir) / kTestFile).string(), data.test);
  auto meta = fs::path(dir) / "batches.meta.txt";
  if (fs::is_regular_file(meta, ec)) {  // optional; a FIFO or directory there is not it
    data.train.class_names = read_class_names(meta.string());
    data.test.class_names = data.train.class_names;
  }
  return data;
}

void check_dataset(const Graph& graph, const Dataset& data) {
  std::vector<Diagnostic> diags;
  const Layer& input = graph.layers()[0];
  if (graph.input_shape() != data.sample) {
    Diagnostic d;
    d.loc = input.loc;
    d.message = fmt::format("model '{}' takes input {}, but the dataset '{}' has samples of {}", graph.name(),
                            graph.input_shape().str(), data.source, data.sample.str());
    d.hint = fmt::format("set input: [{}, {}, {}] to match the data", data.sample.c, data.sample.h, data.sample.w);
    diags.push_back(std::move(d));
  }
  if (graph.classes() != data.classes) {
    const Layer& out = graph.output();
    Diagnostic d;
    d.loc = out.loc;
    d.message = fmt::format("model '{}' has classes: {}, but the dataset '{}' has {} classes", graph.name(), graph.classes(),
                            data.source, data.classes);
    d.hint = fmt::format("set classes: {} and end the model with a linear layer of out: {}", data.classes, data.classes);
    diags.push_back(std::move(d));
  }
  if (!diags.empty()) throw GraphError(std::move(diags));
  // A Dataset made in memory by a program, not read by kiln, is checked like a file.
  const auto want = static_cast<std::uint64_t>(data.size()) * static_cast<std::uint64_t>(data.sample.elements());
  if (data.images.size() != want)
    throw DataError(data.source, -1,
                    fmt::format("{}: {} labels need {} image bytes ({} each), got {}\n    hint: give one image of "
                                "sample.elements() bytes per label, in CIFAR-10's layout",
                                data.source, data.size(), want, data.sample.elements(), data.images.size()));
  for (std::size_t i = 0; i < data.labels.size(); ++i)
    if (data.labels[i] >= data.classes)
      throw DataError(data.source, static_cast<std::int64_t>(i),
                      fmt::format("{}: record {} has label {}, not below the {} classes\n    hint: labels count from 0 "
                                  "to classes - 1; set Dataset::classes to the number of classes",
                                  data.source, i, data.labels[i], data.classes));
}

}  // namespace kiln
