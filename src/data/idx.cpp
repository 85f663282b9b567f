// MNIST-layout IDX reader and writer (MNIST, Fashion-MNIST): train-images-idx3-ubyte,
// train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each plain or
// gzip-compressed (.gz). Every header field is checked before a byte of its data is trusted:
// nothing is allocated from a header's count, only from bytes that are really there.
#include <zlib.h>

#include <array>
#include <climits>
#include <filesystem>
#include <fmt/format.h>

#include "data/data_files.hpp"
#include "kiln/data.hpp"
#include "kiln/error.hpp"
#include "kiln/format.hpp"

namespace kiln {

namespace fs = std::filesystem;

namespace {

constexpr int kSide = 28;
constexpr int kDigits = 10;

// The two kinds of IDX file a set has: what their headers must say.
struct IdxKind {
  std::uint32_t magic;  // 0x0000_08_NN: unsigned bytes, NN dimensions
  std::int64_t header;  // bytes: the magic number and one 32-bit size per dimension
  std::int64_t item;    // bytes of one image or label
  const char* items;    // "images", "labels"
  const char* item_name;
};
constexpr IdxKind kImages{0x00000803, 16, kSide * kSide, "images", "image"};
constexpr IdxKind kLabels{0x00000801, 8, 1, "labels", "label"};

struct SplitFiles {
  const char* images;
  const char* labels;
};
constexpr SplitFiles kTrain{"train-images-idx3-ubyte", "train-labels-idx1-ubyte"};
constexpr SplitFiles kTest{"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

constexpr const char* kGetHint =
    "get MNIST with tools/fetch-mnist.sh or Fashion-MNIST with tools/fetch-fashion-mnist.sh, or make a synthetic set "
    "in the same layout with kiln synth --format mnist --out DIR";

std::uint32_t big_endian_32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

void put_big_endian_32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xFF);
}

// The contents of an IDX file: its first bytes (all of them, unless a .gz inflates to more
// than its header declares) and how many bytes it holds in all.
struct IdxBytes {
  std::vector<std::uint8_t> bytes;
  std::uint64_t total = 0;
  bool gz = false;
};

// How many bytes of a file of `kind` to keep, given its first bytes: the header, and the data
// the header declares once the header is read and its magic number is right.
std::uint64_t bytes_to_keep(const std::vector<std::uint8_t>& head, const IdxKind& kind) {
  const auto header = static_cast<std::uint64_t>(kind.header);
  if (head.size() < header || big_endian_32(head.data()) != kind.magic) return header;
  // A 32-bit count of at most 784-byte items: no overflow in 64 bits.
  return header + std::uint64_t{big_endian_32(head.data() + 4)} * static_cast<std::uint64_t>(kind.item);
}

struct Inflater {
  z_stream stream{};
  Inflater() = default;
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;
  ~Inflater() { inflateEnd(&stream); }
};

// Inflates a gzip file, keeping what bytes_to_keep() says and counting the rest, so that a
// header's count decides no allocation and a trailing excess is still measured.
IdxBytes gunzip(const std::string& path, const std::vector<std::uint8_t>& gz, const IdxKind& kind) {
  if (gz.size() < 2 || gz[0] != 0x1f || gz[1] != 0x8b)
    throw DataError(path, -1,
                    fmt::format("{}: is not gzip data (it does not start with 1f 8b), though its name ends in .gz\n    "
                                "hint: a plain IDX file is named without .gz",
                                path));
  Inflater inflater;
  z_stream& zs = inflater.stream;
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw DataError(path, -1, fmt::format("{}: cannot start zlib's inflate", path));
  IdxBytes out;
  out.gz = true;
  std::uint64_t keep = static_cast<std::uint64_t>(kind.header);
  std::array<std::uint8_t, 1 << 16> chunk{};
  std::size_t fed = 0;  // compressed bytes handed to zlib
  for (;;) {
    if (zs.avail_in == 0 && fed < gz.size()) {
      zs.next_in = const_cast<Bytef*>(gz.data() + fed);
      zs.avail_in = static_cast<uInt>(std::min<std::size_t>(gz.size() - fed, UINT_MAX));
      fed += zs.avail_in;
    }
    zs.next_out = chunk.data();
    zs.avail_out = static_cast<uInt>(chunk.size());
    int rc = inflate(&zs, Z_NO_FLUSH);
    const std::size_t produced = chunk.size() - zs.avail_out;
    out.total += produced;
    for (std::size_t used = 0; used < produced && out.bytes.size() < keep;) {
      std::size_t take = std::min<std::size_t>(produced - used, static_cast<std::size_t>(keep - out.bytes.size()));
      out.bytes.insert(out.bytes.end(), chunk.data() + used, chunk.data() + used + take);
      used += take;
      if (out.bytes.size() >= static_cast<std::size_t>(kind.header)) keep = bytes_to_keep(out.bytes, kind);
    }
    const std::size_t consumed = fed - zs.avail_in;
    if (rc == Z_STREAM_END) {
      if (consumed == gz.size()) break;
      // Another gzip member follows (gzip concatenates them); anything else is not gzip.
      if (gz.size() - consumed >= 2 && gz[consumed] == 0x1f && gz[consumed + 1] == 0x8b) {
        inflateReset(&zs);
        continue;
      }
      throw DataError(path, -1,
                      fmt::format("{}: {} bytes after the end of the gzip stream (at compressed byte {}); the file is "
                                  "corrupt or not one gzip file",
                                  path, format_count(static_cast<std::int64_t>(gz.size() - consumed)),
                                  format_count(static_cast<std::int64_t>(consumed))));
    }
    if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT || rc == Z_MEM_ERROR || rc == Z_STREAM_ERROR)
      throw DataError(path, -1,
                      fmt::format("{}: corrupt gzip data at compressed byte {}: {}\n    hint: download the file again "
                                  "(its checksum will differ from the published one)",
                                  path, format_count(static_cast<std::int64_t>(consumed)),
                                  zs.msg != nullptr ? zs.msg : "zlib error"));
    if (consumed == gz.size() && produced == 0)
      throw DataError(path, -1,
                      fmt::format("{}: the gzip stream is cut short after {} compressed bytes ({} inflated); the "
                                  "download is incomplete\n    hint: download the file again",
                                  path, format_count(static_cast<std::int64_t>(gz.size())),
                                  format_count(static_cast<std::int64_t>(out.total))));
  }
  return out;
}

// The file `name` of `dir`: plain when present, else `name`.gz; empty when neither is there.
std::string find_file(const std::string& dir, const char* name) {
  fs::path plain = fs::path(dir) / name;
  if (detail::present(plain)) return plain.string();
  fs::path gz = fs::path(dir) / (std::string(name) + ".gz");
  if (detail::present(gz)) return gz.string();
  return {};
}

IdxBytes read_idx(const std::string& path, const IdxKind& kind) {
  std::vector<std::uint8_t> bytes = detail::read_file(path, "an IDX file");
  if (path.ends_with(".gz")) {
    if (bytes.empty()) throw DataError(path, -1, fmt::format("{}: is empty (0 bytes); expected gzip-compressed IDX {}", path, kind.items));
    return gunzip(path, bytes, kind);
  }
  IdxBytes out;
  out.total = bytes.size();
  out.bytes = std::move(bytes);
  return out;
}

// Checks an IDX file's header against `kind` and its size against the header; returns the count.
std::int64_t check_idx(const std::string& path, const IdxBytes& file, const IdxKind& kind) {
  const char* inflated = file.gz ? " (inflated)" : "";
  const std::vector<std::uint8_t>& b = file.bytes;
  if (file.total == 0)
    throw DataError(path, -1, fmt::format("{}: is empty (0 bytes){}; expected IDX {} (a {}-byte header, then the data)", path,
                                          inflated, kind.items, kind.header));
  if (file.total >= 4) {
    std::uint32_t magic = big_endian_32(b.data());
    if (magic != kind.magic) {
      const IdxKind& other = kind.magic == kImages.magic ? kLabels : kImages;
      std::string why = magic == other.magic ? fmt::format("; that is IDX {}: are the file names swapped?", other.items)
                        : b[0] == 0x1f && b[1] == 0x8b ? std::string("; the file is gzip data: name it .gz")
                                                       : std::string("; the file is not IDX, or not this one");
      throw DataError(path, -1,
                      fmt::format("{}: magic number 0x{:08x}{}, expected 0x{:08x} (unsigned bytes, {} dimension{}: IDX "
                                  "{}){}",
                                  path, magic, inflated, kind.magic, kind.magic & 0xFF, (kind.magic & 0xFF) == 1 ? "" : "s",
                                  kind.items, why));
    }
  }
  if (file.total < static_cast<std::uint64_t>(kind.header))
    throw DataError(path, -1,
                    fmt::format("{}: {} bytes{} is shorter than the {}-byte header of IDX {}; the file is cut short", path,
                                file.total, inflated, kind.header, kind.items));
  const std::int64_t count = big_endian_32(b.data() + 4);
  if (kind.magic == kImages.magic) {
    std::uint32_t rows = big_endian_32(b.data() + 8), cols = big_endian_32(b.data() + 12);
    if (rows != kSide || cols != kSide)
      throw DataError(path, -1,
                      fmt::format("{}: the header says images of {} rows x {} columns; MNIST-layout images are 28 x 28",
                                  path, rows, cols));
  }
  const std::uint64_t expected = static_cast<std::uint64_t>(kind.header) + static_cast<std::uint64_t>(count * kind.item);
  if (file.total < expected) {
    const std::int64_t data = static_cast<std::int64_t>(file.total) - kind.header;
    const std::int64_t whole = data / kind.item, part = data % kind.item;
    std::string what = part == 0 ? fmt::format("it holds only {} of them", format_count(whole))
                                 : fmt::format("{} {} is truncated ({} of {} bytes)", kind.item_name, format_count(whole),
                                               part, kind.item);
    throw DataError(path, whole,
                    fmt::format("{}: the header declares {} {} ({} bytes in all), but the file has {} bytes{}: {}; the "
                                "file is cut short",
                                path, format_count(count), kind.items, format_count(static_cast<std::int64_t>(expected)),
                                format_count(static_cast<std::int64_t>(file.total)), inflated, what));
  }
  if (file.total > expected)
    throw DataError(path, count,
                    fmt::format("{}: {} trailing bytes after the {} {} the header declares ({} bytes{}, expected {})", path,
                                format_count(static_cast<std::int64_t>(file.total - expected)), format_count(count),
                                kind.items, format_count(static_cast<std::int64_t>(file.total)), inflated,
                                format_count(static_cast<std::int64_t>(expected))));
  return count;
}

// Reads one split's pair of files into `out`, checking that they agree.
void read_split(const std::string& images_path, const std::string& labels_path, Dataset& out) {
  IdxBytes images = read_idx(images_path, kImages);
  const std::int64_t image_count = check_idx(images_path, images, kImages);
  IdxBytes labels = read_idx(labels_path, kLabels);
  const std::int64_t label_count = check_idx(labels_path, labels, kLabels);
  if (image_count != label_count)
    throw DataError(labels_path, -1,
                    fmt::format("{}: {} labels, but {} has {} images; a split's two files hold one label per image",
                                labels_path, format_count(label_count), images_path, format_count(image_count)));
  for (std::int64_t r = 0; r < label_count; ++r) {
    std::uint8_t label = labels.bytes[static_cast<std::size_t>(kLabels.header + r)];
    if (label >= kDigits)
      throw DataError(labels_path, r,
                      fmt::format("{}: label {} (byte offset {}{}) is {}; MNIST-layout labels are 0..9", labels_path, r,
                                  format_count(kLabels.header + r), labels.gz ? " inflated" : "", label));
  }
  out.images.assign(images.bytes.begin() + kImages.header, images.bytes.end());
  out.labels.assign(labels.bytes.begin() + kLabels.header, labels.bytes.end());
}

// A split as its two IDX files.
std::string images_file(const Dataset& data) {
  std::string out;
  put_big_endian_32(out, kImages.magic);
  put_big_endian_32(out, static_cast<std::uint32_t>(data.size()));
  put_big_endian_32(out, kSide);
  put_big_endian_32(out, kSide);
  out.append(data.images.begin(), data.images.end());
  return out;
}

std::string labels_file(const Dataset& data) {
  std::string out;
  put_big_endian_32(out, kLabels.magic);
  put_big_endian_32(out, static_cast<std::uint32_t>(data.size()));
  out.append(data.labels.begin(), data.labels.end());
  return out;
}

// Refuses, before any file is written, what load_idx would reject.
void check_split(const Dataset& data, const std::string& file, const char* split) {
  if (data.sample != Shape::chw(1, kSide, kSide))
    throw DataError(file, -1,
                    fmt::format("{}: the {} split has samples of {}; IDX files of the MNIST layout hold 1x28x28 images",
                                file, split, data.sample.str()));
  if (static_cast<std::int64_t>(data.images.size()) != data.size() * kSide * kSide)
    throw DataError(file, -1,
                    fmt::format("{}: the {} split has {} labels but {} image bytes (expected {} per image)", file, split,
                                data.size(), data.images.size(), kSide * kSide));
  if (data.size() > std::int64_t{UINT32_MAX})
    throw DataError(file, -1, fmt::format("{}: the {} split has {} images, more than IDX's 32-bit count", file, split, data.size()));
  for (std::int64_t r = 0; r < data.size(); ++r)
    if (data.labels[static_cast<std::size_t>(r)] >= kDigits)
      throw DataError(file, r,
                      fmt::format("{}: record {} has label {}; MNIST-layout labels are 0..9", file, r,
                                  data.labels[static_cast<std::size_t>(r)]));
}

}  // namespace

namespace detail {

std::vector<std::string> idx_class_names(DataFormat format) {
  if (format == DataFormat::fashion_mnist)
    return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  return {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
}

void write_idx(const Splits& data, const std::string& dir) {
  const fs::path root(dir);
  check_split(data.train, (root / kTrain.labels).string(), "train");
  check_split(data.test, (root / kTest.labels).string(), "test");
  make_directory(dir);
  write_atomically(root / kTrain.images, images_file(data.train));
  write_atomically(root / kTrain.labels, labels_file(data.train));
  write_atomically(root / kTest.images, images_file(data.test));
  write_atomically(root / kTest.labels, labels_file(data.test));
  sync_directory(dir);
}

}  // namespace detail

Splits load_idx(const std::string& dir, DataFormat format) {
  if (format != DataFormat::mnist && format != DataFormat::fashion_mnist)
    throw UsageError(fmt::format("load_idx reads mnist or fashion-mnist, not {}", format_name(format)));
  const char* title = format == DataFormat::mnist ? "MNIST" : "Fashion-MNIST";
  detail::require_directory(dir, title, "train-images-idx3-ubyte … t10k-labels-idx1-ubyte (plain or .gz)", kGetHint);
  std::vector<std::string> missing;
  std::array<std::string, 4> paths;
  std::size_t k = 0;
  for (const SplitFiles& split : {kTrain, kTest})
    for (const char* name : {split.images, split.labels}) {
      paths[k] = find_file(dir, name);
      if (paths[k++].empty()) missing.push_back(fmt::format("{}[.gz]", name));
    }
  if (!missing.empty())
    throw DataError(dir, -1,
                    fmt::format("'{}' is not a {} directory of IDX files: missing {} (expected train-images-idx3-ubyte, "
                                "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each plain "
                                "or .gz)\n    hint: {}",
                                dir, title, fmt::join(missing, ", "), kGetHint));
  Splits data;
  data.format = format;
  for (Dataset* split : {&data.train, &data.test}) {
    split->source = dir;
    split->sample = Shape::chw(1, kSide, kSide);
    split->classes = kDigits;
    split->class_names = detail::idx_class_names(format);
  }
  read_split(paths[0], paths[1], data.train);
  read_split(paths[2], paths[3], data.test);
  return data;
}

}  // namespace kiln
