// CIFAR-10 binary reader and writer: data_batch_1..5.bin, test_batch.bin, batches.meta.txt.
// Every file is validated before anything is returned, so training never starts on bad data.
#include <cstring>
#include <filesystem>
#include <fmt/format.h>

#include "data/data_files.hpp"
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

void append_batch(const std::string& path, Dataset& out) {
  std::vector<std::uint8_t> bytes = detail::read_file(path, "a CIFAR-10 batch file");
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

// The records [first, first + count) of a split as CIFAR-10 binary.
std::string records(const Dataset& data, std::int64_t first, std::int64_t count) {
  const std::int64_t pixels = cifar10_record_bytes - 1;
  std::string out(static_cast<std::size_t>(count * cifar10_record_bytes), '\0');
  for (std::int64_t r = 0; r < count; ++r) {
    char* rec = out.data() + r * cifar10_record_bytes;
    rec[0] = static_cast<char>(data.labels[static_cast<std::size_t>(first + r)]);
    std::memcpy(rec + 1, data.image(first + r), static_cast<std::size_t>(pixels));
  }
  return out;
}

// One output file: the records [first, first + count) of a split.
struct Part {
  fs::path file;
  const Dataset* data;
  const char* split;
  std::int64_t first;
  std::int64_t count;
};

// Refuses, before any file is written, what load_cifar10 would reject, naming the file and
// the record as the reader would.
void check_part(const Part& part) {
  const Dataset& data = *part.data;
  std::string file = part.file.string();
  if (data.sample != Shape::chw(3, 32, 32))
    throw DataError(file, -1,
                    fmt::format("{}: the {} split has samples of {}; CIFAR-10 binary records hold 3x32x32 images", file,
                                part.split, data.sample.str()));
  if (static_cast<std::int64_t>(data.images.size()) != data.size() * data.sample.elements())
    throw DataError(file, -1,
                    fmt::format("{}: the {} split has {} labels but {} image bytes (expected {} per image)", file, part.split,
                                data.size(), data.images.size(), data.sample.elements()));
  if (part.count == 0)
    throw DataError(file, -1,
                    fmt::format("{}: would be empty: the {} split has {} images, too few to give every file one "
                                "(load_cifar10 rejects empty batch files)",
                                file, part.split, data.size()));
  for (std::int64_t r = 0; r < part.count; ++r) {
    std::uint8_t label = data.labels[static_cast<std::size_t>(part.first + r)];
    if (label >= 10)
      throw DataError(file, r,
                      fmt::format("{}: record {} ({} image {}) has label {}; CIFAR-10 labels are 0..9", file, r, part.split,
                                  part.first + r, label));
  }
}

}  // namespace

Cifar10 load_cifar10(const std::string& dir) {
  using detail::present;
  detail::require_directory(dir, "CIFAR-10", "data_batch_1.bin … test_batch.bin", kGetHint);
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
  data.format = DataFormat::cifar10;
  data.train.source = dir;
  data.test.source = dir;
  for (const char* f : kTrainFiles) append_batch((fs::path(dir) / f).string(), data.train);
  append_batch((fs::path(dir) / kTestFile).string(), data.test);
  data.train.class_names = detail::read_class_names((fs::path(dir) / "batches.meta.txt").string());
  data.test.class_names = data.train.class_names;
  return data;
}

void write_cifar10(const Cifar10& data, const std::string& dir) {
  const fs::path root(dir);
  constexpr int kTrainFiles = 5;
  std::vector<Part> parts;
  std::int64_t n = data.train.size(), first = 0;
  for (int k = 0; k < kTrainFiles; ++k) {
    std::int64_t count = n / kTrainFiles + (k < n % kTrainFiles ? 1 : 0);
    parts.push_back({root / fmt::format("data_batch_{}.bin", k + 1), &data.train, "train", first, count});
    first += count;
  }
  parts.push_back({root / "test_batch.bin", &data.test, "test", 0, data.test.size()});
  for (const Part& part : parts) check_part(part);

  detail::make_directory(dir);

  for (const Part& part : parts) detail::write_atomically(part.file, records(*part.data, part.first, part.count));
  detail::write_atomically(root / "batches.meta.txt", detail::name_lines(data.train.class_names));
  // The renames are durable only once the directory itself is on disk.
  detail::sync_directory(dir);
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
                                "sample.elements() bytes per label: C planes of H x W bytes each (CHW)",
                                data.source, data.size(), want, data.sample.elements(), data.images.size()));
  for (std::size_t i = 0; i < data.labels.size(); ++i)
    if (data.labels[i] >= data.classes)
      throw DataError(data.source, static_cast<std::int64_t>(i),
                      fmt::format("{}: record {} has label {}, not below the {} classes\n    hint: labels count from 0 "
                                  "to classes - 1; set Dataset::classes to the number of classes",
                                  data.source, i, data.labels[i], data.classes));
}

}  // namespace kiln
