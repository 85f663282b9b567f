// Reading safetensors. Every byte of the file is untrusted: each size is checked against the
// file before anything is allocated for it, and each failure is a CheckpointError that names
// the file (and the tensor), never a crash.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <optional>
#include <set>
#include <string_view>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "kiln/checkpoint.hpp"
#include "math/half.hpp"
#include "util/checked.hpp"

namespace kiln {

static_assert(std::endian::native == std::endian::little, "kiln's safetensors reader assumes a little-endian host");

namespace {

using Json = nlohmann::ordered_json;

// A real header is a few kB per thousand tensors; a larger length is corruption, and must
// not become an allocation.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

enum class Source : std::uint8_t { f32, f16, bf16, f64, i64 };

struct Dtype {
  std::string_view name;
  Source source;
  std::int64_t size;
};

constexpr Dtype kReadable[] = {
    {"F32", Source::f32, 4}, {"F16", Source::f16, 2}, {"BF16", Source::bf16, 2},
    {"F64", Source::f64, 8}, {"I64", Source::i64, 8},
};

// Valid safetensors dtypes that kiln has no use for: named as such, not as "unknown".
constexpr std::string_view kUnreadable[] = {"BOOL", "U8",      "I8",      "U16",     "I16",     "U32",     "I32", "U64",
                                            "C64",  "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"};

struct Entry {
  std::string name;
  const Dtype* dtype = nullptr;
  std::vector<std::int64_t> dims;
  std::int64_t elements = 1;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

std::string dims_str(const std::vector<std::int64_t>& dims) { return fmt::format("[{}]", fmt::join(dims, ", ")); }

class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {}
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  ~Reader() {
    if (fd_ >= 0) ::close(fd_);
  }

  SafetensorsFile read() {
    open();
    Json header = parse_header();
    SafetensorsFile file;
    std::vector<Entry> entries;
    for (const auto& [name, value] : header.items()) {
      if (name == "__metadata__") {
        file.metadata = metadata(value);
      } else {
        entries.push_back(entry(name, value));
      }
    }
    // File order is data order; a stable sort keeps header order among empty tensors.
    std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
    check_overlaps(entries);
    file.tensors.reserve(entries.size());
    for (const Entry& e : entries) file.tensors.push_back(load(e));
    return file;
  }

 private:
  [[noreturn]] void fail(const std::string& message, std::vector<std::string> tensors = {}) const {
    throw CheckpointError(path_, fmt::format("{}: {}", path_, message), std::move(tensors));
  }
  [[noreturn]] void fail_tensor(const std::string& name, const std::string& message) const {
    fail(fmt::format("tensor '{}': {}", name, message), {name});
  }

  void open() {
    // O_NONBLOCK: opening a FIFO must not hang; it is refused below as not a regular file.
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd_ < 0) {
      int err = errno;
      fail(fmt::format("cannot open checkpoint: {}", std::strerror(err)));
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      int err = errno;
      fail(fmt::format("cannot stat checkpoint: {}", std::strerror(err)));
    }
    if (S_ISDIR(st.st_mode)) fail("is a directory, not a safetensors file");
    if (!S_ISREG(st.st_mode)) fail("is not a regular file");
    size_ = static_cast<std::uint64_t>(st.st_size);
    if (size_ < 8)
      fail(fmt::format("is {} bytes, too short for a safetensors file (it starts with an 8-byte header length)", size_));
  }

  // Reads exactly `size` bytes at `offset`; a short read means the file shrank under us.
  void read_at(void* out, std::uint64_t size, std::uint64_t offset, std::string_view what) const {
    char* p = static_cast<char*>(out);
    while (size > 0) {
      ssize_t n = ::pread(fd_, p, std::min<std::uint64_t>(size, std::uint64_t{1} << 30), static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int err = errno;
        fail(fmt::format("read failed ({}): {}", what, std::strerror(err)));
      }
      if (n == 0) fail(fmt::format("the file ended early ({}); was it truncated while being read?", what));
      p += n;
      size -= static_cast<std::uint64_t>(n);
      offset += static_cast<std::uint64_t>(n);
    }
  }

  Json parse_header() {
    std::uint64_t length = 0;
    read_at(&length, sizeof length, 0, "header length");
    if (length > kMaxHeaderBytes)
      fail(fmt::format("header length {} is absurd (over {} bytes): not a safetensors file, or a corrupt one", length,
                       kMaxHeaderBytes));
    if (length > size_ - 8)
      fail(fmt::format("header length {} runs past the end of the file ({} bytes, {} after the length): truncated or "
                       "not a safetensors file",
                       length, size_, size_ - 8));
    data_start_ = 8 + length;
    std::string text(length, '\0');
    read_at(text.data(), length, 8, "header");

    // The DOM keeps only the last of duplicate keys, so duplicates are caught while parsing.
    // Depth is capped too: a valid header nests three levels (header, entry, shape), and a
    // deeper one need not be built in memory before it is refused.
    std::optional<std::string> duplicate;
    std::vector<std::string> duplicate_tensor;
    bool too_deep = false;
    std::vector<std::set<std::string>> keys;
    auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
      switch (event) {
        case Json::parse_event_t::object_start:
        case Json::parse_event_t::array_start:
          if (depth >= 3) {
            too_deep = true;
            return false;  // discarded: not built
          }
          if (event == Json::parse_event_t::object_start) keys.emplace_back();
          break;
        case Json::parse_event_t::object_end:
          if (!keys.empty()) keys.pop_back();
          break;
        case Json::parse_event_t::key:
          if (!keys.empty() && !keys.back().insert(parsed.get<std::string>()).second && !duplicate) {
            const auto& key = parsed.get_ref<const std::string&>();
            if (depth == 1 && key == "__metadata__") {
              duplicate = "__metadata__ appears twice in the header";
            } else if (depth == 1) {
              duplicate = fmt::format("tensor '{}' appears twice in the header", key);
              duplicate_tensor = {key};
            } else {
              duplicate = fmt::format("key '{}' appears twice in one object of the header", key);
            }
          }
          break;
        default:
          break;
      }
      return true;
    };
    Json header;
    try {
      header = Json::parse(text, callback);
    } catch (const Json::exception& e) {
      // parse_error, and out_of_range for a number beyond a double ("1e999"), found by fuzzing.
      std::string_view what = e.what();
      if (auto close = what.find("] "); close != std::string_view::npos) what.remove_prefix(close + 2);
      fail(fmt::format("header is not valid JSON ({})", what));
    }
    if (too_deep) fail("header nests deeper than a safetensors header can");
    if (duplicate) fail(*duplicate, duplicate_tensor);
    if (!header.is_object()) fail(fmt::format("header is a JSON {}, not an object", header.type_name()));
    return header;
  }

  std::map<std::string, std::string> metadata(const Json& value) const {
    if (!value.is_object())
      fail(fmt::format("__metadata__ must be an object of strings, got a JSON {}", value.type_name()));
    std::map<std::string, std::string> out;
    for (const auto& [key, v] : value.items()) {
      if (!v.is_string()) fail(fmt::format("__metadata__ value of '{}' must be a string, got a JSON {}", key, v.type_name()));
      out.emplace(key, v.get<std::string>());
    }
    return out;
  }

  // A JSON integer that must be non-negative; `what` says where it sits.
  std::int64_t count(const std::string& name, const Json& v, std::string_view what) const {
    if (v.is_number_unsigned()) {
      auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX)) fail_tensor(name, fmt::format("{} {} is too large", what, u));
      return static_cast<std::int64_t>(u);
    }
    if (v.is_number_integer()) fail_tensor(name, fmt::format("{} is negative ({})", what, v.get<std::int64_t>()));
    fail_tensor(name, fmt::format("{} must be an integer, got a JSON {} ({})", what, v.type_name(), v.dump()));
  }

  const Json& field(const std::string& name, const Json& v, const char* key, Json::value_t type) const {
    auto it = v.find(key);
    if (it == v.end()) fail_tensor(name, fmt::format("its header entry has no '{}'", key));
    if (it->type() != type)
      fail_tensor(name, fmt::format("'{}' must be a JSON {}, got {}", key, Json(type).type_name(), it->dump()));
    return *it;
  }

  Entry entry(const std::string& name, const Json& v) const {
    if (!v.is_object()) fail_tensor(name, fmt::format("its header entry must be an object, got {}", v.dump()));
    Entry e;
    e.name = name;

    std::string dtype = field(name, v, "dtype", Json::value_t::string).get<std::string>();
    for (const Dtype& d : kReadable)
      if (d.name == dtype) e.dtype = &d;
    if (!e.dtype) {
      bool valid = std::find(std::begin(kUnreadable), std::end(kUnreadable), dtype) != std::end(kUnreadable);
      fail_tensor(name, fmt::format("{} dtype {}; kiln reads F32, F16, BF16, F64 (as fp32) and I64",
                                    valid ? "has" : "has an unknown", dtype));
    }

    const Json& shape = field(name, v, "shape", Json::value_t::array);
    for (const Json& d : shape) e.dims.push_back(count(name, d, "a dimension of its shape"));
    for (std::int64_t d : e.dims) {
      auto next = detail::checked_mul(e.elements, d);
      if (!next) fail_tensor(name, fmt::format("shape {} has more elements than fit in 64 bits", dims_str(e.dims)));
      e.elements = *next;
    }
    auto bytes = detail::checked_mul(e.elements, e.dtype->size);
    if (!bytes)
      fail_tensor(name, fmt::format("shape {} of {} has more bytes than fit in 64 bits", dims_str(e.dims), dtype));

    const Json& offsets = field(name, v, "data_offsets", Json::value_t::array);
    if (offsets.size() != 2)
      fail_tensor(name, fmt::format("data_offsets must be [begin, end], got {}", offsets.dump()));
    e.begin = static_cast<std::uint64_t>(count(name, offsets[0], "data_offsets begin"));
    e.end = static_cast<std::uint64_t>(count(name, offsets[1], "data_offsets end"));
    if (e.end < e.begin) fail_tensor(name, fmt::format("data_offsets [{}, {}] end before they begin", e.begin, e.end));
    if (e.end - e.begin != static_cast<std::uint64_t>(*bytes))
      fail_tensor(name, fmt::format("data_offsets [{}, {}] span {} bytes, but shape {} of {} needs {} ({} elements x {} "
                                    "bytes)",
                                    e.begin, e.end, e.end - e.begin, dims_str(e.dims), dtype, *bytes, e.elements,
                                    e.dtype->size));
    std::uint64_t buffer = size_ - data_start_;
    if (e.end > buffer)
      fail_tensor(name, fmt::format("data_offsets [{}, {}] run past the end of the data ({} bytes): the file is "
                                    "truncated or corrupt",
                                    e.begin, e.end, buffer));
    return e;
  }

  // Entries sorted by begin; empty tensors own no bytes and cannot overlap anything.
  void check_overlaps(const std::vector<Entry>& entries) const {
    const Entry* last = nullptr;
    for (const Entry& e : entries) {
      if (e.begin == e.end) continue;
      if (last && e.begin < last->end)
        fail(fmt::format("tensors '{}' (data_offsets [{}, {}]) and '{}' ([{}, {}]) overlap", last->name, last->begin,
                         last->end, e.name, e.begin, e.end),
             {last->name, e.name});
      if (!last || e.end > last->end) last = &e;
    }
  }

  template <typename Raw>
  std::vector<Raw> raw(const Entry& e) const {
    std::vector<Raw> out(static_cast<std::size_t>(e.elements));
    read_at(out.data(), e.end - e.begin, data_start_ + e.begin, fmt::format("tensor '{}'", e.name));
    return out;
  }

  void check_finite(const Entry& e, const std::vector<float>& values) const {
    for (std::size_t i = 0; i < values.size(); ++i)
      if (!std::isfinite(values[i]))
        fail_tensor(e.name, fmt::format("holds {} at element {} (of {}); a checkpoint must hold finite values",
                                        values[i], i, values.size()));
  }

  NamedTensor load(const Entry& e) const {
    NamedTensor t;
    t.name = e.name;
    t.dims = e.dims;
    t.type = e.dtype->source == Source::i64 ? TensorType::i64 : TensorType::f32;
    switch (e.dtype->source) {
      case Source::i64:
        t.i64 = raw<std::int64_t>(e);
        return t;
      case Source::f32:
        t.f32 = raw<float>(e);
        break;
      case Source::f16:
      case Source::bf16: {
        auto bits = raw<std::uint16_t>(e);
        t.f32.resize(bits.size());
        auto convert = e.dtype->source == Source::f16 ? math::fp16_bits_to_float : math::bf16_bits_to_float;
        std::transform(bits.begin(), bits.end(), t.f32.begin(), convert);
        break;
      }
      case Source::f64: {
        auto wide = raw<double>(e);
        t.f32.resize(wide.size());
        for (std::size_t i = 0; i < wide.size(); ++i) {
          // Checked before narrowing: a finite double beyond fp32's range has no fp32 value.
          if (std::isfinite(wide[i]) && std::fabs(wide[i]) > FLT_MAX)
            fail_tensor(e.name, fmt::format("holds {} at element {} (of {}), outside the fp32 range", wide[i], i,
                                            wide.size()));
          t.f32[i] = static_cast<float>(wide[i]);
        }
        break;
      }
    }
    check_finite(e, t.f32);
    return t;
  }

  const std::string& path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
  std::uint64_t data_start_ = 0;
};

}  // namespace

SafetensorsFile read_safetensors(const std::string& path) { return Reader(path).read(); }

}  // namespace kiln
