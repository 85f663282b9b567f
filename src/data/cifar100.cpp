// CIFAR-100 binary reader and writer: train.bin and test.bin, 3,074-byte records (coarse
// label, fine label, 3x32x32 pixels), and the optional fine_label_names.txt and
// coarse_label_names.txt. Every file is validated before anything is returned.
#include <cstring>
#include <filesystem>
#include <fmt/format.h>

#include "data/data_files.hpp"
#include "kiln/data.hpp"
#include "kiln/error.hpp"
#include "kiln/format.hpp"

namespace kiln {

namespace fs = std::filesystem;

namespace detail {

const std::uint8_t kCifar100Coarse[100] = {
    4,  1,  14, 8,  0,  6,  7,  7,  18, 3,  3,  14, 9,  18, 7,  11, 3,  9,  7,  11, 6,  11, 5,  10, 7,
    6,  13, 15, 3,  15, 0,  11, 1,  10, 12, 14, 16, 9,  11, 5,  5,  19, 8,  8,  15, 13, 14, 17, 18, 10,
    16, 4,  17, 4,  2,  0,  17, 4,  18, 17, 10, 3,  2,  12, 12, 16, 12, 1,  9,  19, 2,  10, 0,  1,  16,
    12, 9,  13, 15, 13, 16, 19, 2,  4,  6,  19, 5,  5,  8,  19, 18, 1,  2,  15, 6,  0,  17, 8,  14, 13};

std::vector<std::string> cifar100_coarse_names() {
  return {"aquatic_mammals",
          "fish",
          "flowers",
          "food_containers",
          "fruit_and_vegetables",
          "household_electrical_devices",
          "household_furniture",
          "insects",
          "large_carnivores",
          "large_man-made_outdoor_things",
          "large_natural_outdoor_scenes",
          "large_omnivores_and_herbivores",
          "medium_mammals",
          "non-insect_invertebrates",
          "people",
          "reptiles",
          "small_mammals",
          "trees",
          "vehicles_1",
          "vehicles_2"};
}

}  // namespace detail

namespace {

constexpr std::int64_t kRecordBytes = 3074;
constexpr std::int64_t kPixels = 3 * 32 * 32;
constexpr const char* kTrainFile = "train.bin";
constexpr const char* kTestFile = "test.bin";
constexpr const char* kGetHint =
    "get CIFAR-100 with tools/fetch-cifar100.sh, or make a synthetic set in the same format with kiln synth "
    "--format cifar100 --out DIR";

// Appends the records of one file, taking the label at `label_byte` (0: coarse, 1: fine).
void append_file(const std::string& path, int label_byte, Dataset& out) {
  std::vector<std::uint8_t> bytes = detail::read_file(path, "a CIFAR-100 binary file");
  auto size = static_cast<std::int64_t>(bytes.size());
  if (size == 0)
    throw DataError(path, -1, fmt::format("{}: is empty (0 bytes); a CIFAR-100 file holds 3,074-byte records", path));
  if (size % kRecordBytes != 0) {
    std::int64_t whole = size / kRecordBytes;
    throw DataError(path, whole,
                    fmt::format("{}: {} bytes is not a whole number of 3,074-byte records: record {} is truncated "
                                "({} of 3,074 bytes); the file is cut short or not CIFAR-100 binary",
                                path, format_count(size), whole, format_count(size - whole * kRecordBytes)));
  }
  const std::int64_t records = size / kRecordBytes;
  for (std::int64_t r = 0; r < records; ++r) {
    const std::uint8_t* rec = bytes.data() + r * kRecordBytes;
    if (rec[0] >= 20)
      throw DataError(path, r,
                      fmt::format("{}: record {} (byte offset {}) has coarse label {}; CIFAR-100 coarse labels are "
                                  "0..19\n    hint: is this CIFAR-10 binary (one label byte per record)?",
                                  path, r, format_count(r * kRecordBytes), rec[0]));
    if (rec[1] >= 100)
      throw DataError(path, r,
                      fmt::format("{}: record {} (byte offset {}) has fine label {}; CIFAR-100 fine labels are 0..99", path,
                                  r, format_count(r * kRecordBytes + 1), rec[1]));
  }
  std::size_t base = out.images.size();
  out.images.resize(base + static_cast<std::size_t>(records * kPixels));
  out.labels.reserve(out.labels.size() + static_cast<std::size_t>(records));
  for (std::int64_t r = 0; r < records; ++r) {
    const std::uint8_t* rec = bytes.data() + r * kRecordBytes;
    out.labels.push_back(rec[label_byte]);
    std::memcpy(out.images.data() + base + static_cast<std::size_t>(r * kPixels), rec + 2, static_cast<std::size_t>(kPixels));
  }
}

// The records of a split as CIFAR-100 binary: the coarse label is the fine label's superclass.
std::string records(const Dataset& data) {
  std::string out(static_cast<std::size_t>(data.size() * kRecordBytes), '\0');
  for (std::int64_t r = 0; r < data.size(); ++r) {
    char* rec = out.data() + r * kRecordBytes;
    std::uint8_t fine = data.labels[static_cast<std::size_t>(r)];
    rec[0] = static_cast<char>(detail::kCifar100Coarse[fine]);
    rec[1] = static_cast<char>(fine);
    std::memcpy(rec + 2, data.image(r), static_cast<std::size_t>(kPixels));
  }
  return out;
}

// Refuses, before any file is written, what load_cifar100 would reject.
void check_split(const Dataset& data, const std::string& file, const char* split) {
  if (data.sample != Shape::chw(3, 32, 32))
    throw DataError(file, -1,
                    fmt::format("{}: the {} split has samples of {}; CIFAR-100 records hold 3x32x32 images", file, split,
                                data.sample.str()));
  if (data.classes != 100)
    throw DataError(file, -1,
                    fmt::format("{}: the {} split has {} classes; writing CIFAR-100 needs the 100 fine labels (the "
                                "coarse label is derived from the fine one)",
                                file, split, data.classes));
  if (static_cast<std::int64_t>(data.images.size()) != data.size() * kPixels)
    throw DataError(file, -1,
                    fmt::format("{}: the {} split has {} labels but {} image bytes (expected {} per image)", file, split,
                                data.size(), data.images.size(), kPixels));
  if (data.size() == 0)
    throw DataError(file, -1,
                    fmt::format("{}: would be empty: the {} split has no images (load_cifar100 rejects empty files)", file,
                                split));
  for (std::int64_t r = 0; r < data.size(); ++r)
    if (data.labels[static_cast<std::size_t>(r)] >= 100)
      throw DataError(file, r,
                      fmt::format("{}: record {} has label {}; CIFAR-100 fine labels are 0..99", file, r,
                                  data.labels[static_cast<std::size_t>(r)]));
}

}  // namespace

Splits load_cifar100(const std::string& dir, Cifar100Label label) {
  detail::require_directory(dir, "CIFAR-100", "train.bin and test.bin", kGetHint);
  std::vector<std::string> missing;
  for (const char* f : {kTrainFile, kTestFile})
    if (!detail::present(fs::path(dir) / f)) missing.emplace_back(f);
  if (!missing.empty())
    throw DataError(dir, -1,
                    fmt::format("'{}' is not a CIFAR-100 binary directory: missing {} (expected train.bin and test.bin, "
                                "the \"CIFAR-100 binary version\")\n    hint: {}",
                                dir, fmt::join(missing, ", "), kGetHint));
  const bool fine = label == Cifar100Label::fine;
  Splits data;
  data.format = DataFormat::cifar100;
  for (Dataset* split : {&data.train, &data.test}) {
    split->source = dir;
    split->classes = fine ? 100 : 20;
  }
  append_file((fs::path(dir) / kTrainFile).string(), fine ? 1 : 0, data.train);
  append_file((fs::path(dir) / kTestFile).string(), fine ? 1 : 0, data.test);
  data.train.class_names =
      detail::read_class_names((fs::path(dir) / (fine ? "fine_label_names.txt" : "coarse_label_names.txt")).string());
  data.test.class_names = data.train.class_names;
  return data;
}

namespace detail {

void write_cifar100(const Splits& data, const std::string& dir) {
  const fs::path root(dir);
  const fs::path train = root / kTrainFile, test = root / kTestFile;
  check_split(data.train, train.string(), "train");
  check_split(data.test, test.string(), "test");
  // The coarse names the written coarse labels have: the synthetic set's own, else the official ones.
  std::vector<std::string> coarse_names = data.train.class_names == synthetic_cifar100_names(Cifar100Label::fine)
                                              ? synthetic_cifar100_names(Cifar100Label::coarse)
                                              : cifar100_coarse_names();
  make_directory(dir);
  write_atomically(train, records(data.train));
  write_atomically(test, records(data.test));
  write_atomically(root / "fine_label_names.txt", name_lines(data.train.class_names));
  write_atomically(root / "coarse_label_names.txt", name_lines(coarse_names));
  sync_directory(dir);
}

}  // namespace detail

}  // namespace kiln
