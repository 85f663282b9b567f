// safetensors: the atomic writer, and matching a file against a graph's parameters.
// The reader, which treats every byte of the file as untrusted, is safetensors_read.cpp.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "kiln/checkpoint.hpp"
#include "util/checked.hpp"

namespace kiln {

// safetensors is little-endian; the writer sends the vectors' bytes as they are.
static_assert(std::endian::native == std::endian::little, "kiln's safetensors writer assumes a little-endian host");

const NamedTensor* SafetensorsFile::find(const std::string& name) const {
  for (const NamedTensor& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

namespace {

namespace fs = std::filesystem;

std::string dims_str(const std::vector<std::int64_t>& dims) { return fmt::format("[{}]", fmt::join(dims, ", ")); }

std::size_t element_count(const NamedTensor& t) { return t.type == TensorType::f32 ? t.f32.size() : t.i64.size(); }
std::size_t item_size(const NamedTensor& t) { return t.type == TensorType::f32 ? sizeof(float) : sizeof(std::int64_t); }
const void* data_of(const NamedTensor& t) {
  return t.type == TensorType::f32 ? static_cast<const void*>(t.f32.data()) : static_cast<const void*>(t.i64.data());
}

// Refuses, before anything touches the disk, what would make a file that kiln (or
// safetensors itself) could not read back.
void validate(const std::string& path, const SafetensorsFile& file) {
  auto fail = [&](const NamedTensor& t, const std::string& what) {
    throw CheckpointError(path, fmt::format("{}: cannot write checkpoint: tensor '{}' {}", path, t.name, what), {t.name});
  };
  std::unordered_set<std::string_view> names;
  for (const NamedTensor& t : file.tensors) {
    if (t.name == "__metadata__") fail(t, "has the name safetensors reserves for the metadata");
    if (!names.insert(t.name).second) fail(t, "appears twice");
    std::int64_t elements = 1;
    for (std::int64_t d : t.dims) {
      if (d < 0) fail(t, fmt::format("has a negative dimension in its shape {}", dims_str(t.dims)));
      auto next = detail::checked_mul(elements, d);
      if (!next) fail(t, fmt::format("has a shape {} whose element count overflows 64 bits", dims_str(t.dims)));
      elements = *next;
    }
    const char* kind = t.type == TensorType::f32 ? "f32" : "i64";
    if (static_cast<std::uint64_t>(elements) != element_count(t))
      fail(t, fmt::format("has shape {} ({} elements) but holds {} {} values", dims_str(t.dims), elements,
                          element_count(t), kind));
    std::size_t stray = t.type == TensorType::f32 ? t.i64.size() : t.f32.size();
    if (stray != 0)
      fail(t, fmt::format("is {} but also holds {} values of the other type", t.type == TensorType::f32 ? "F32" : "I64",
                          stray));
    if (t.type == TensorType::f32) {
      for (std::size_t i = 0; i < t.f32.size(); ++i)
        if (!std::isfinite(t.f32[i]))
          fail(t, fmt::format("holds {} at element {}; kiln refuses to read such a file back", t.f32[i], i));
    }
  }
}

// The JSON header, padded with spaces so that the data buffer starts 8-byte aligned (the
// 8-byte length prefix plus a multiple of 8), as the safetensors library itself does.
std::string header_of(const std::string& path, const SafetensorsFile& file) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  // safetensors omits the key rather than writing an empty map; do the same.
  if (!file.metadata.empty()) {
    auto& meta = header["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [key, value] : file.metadata) meta[key] = value;
  }
  std::uint64_t offset = 0;
  for (const NamedTensor& t : file.tensors) {
    std::uint64_t bytes = element_count(t) * item_size(t);
    header[t.name] = {{"dtype", t.type == TensorType::f32 ? "F32" : "I64"},
                      {"shape", t.dims},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text;
  try {
    text = header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::strict);
  } catch (const nlohmann::ordered_json::exception& e) {
    throw CheckpointError(path, fmt::format("{}: cannot write checkpoint: a tensor name or metadata string is not valid "
                                            "UTF-8 ({})",
                                            path, e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

[[noreturn]] void fail_io(const std::string& path, const std::string& step, int err) {
  throw CheckpointError(path, fmt::format("{}: cannot write checkpoint: {}: {}", path, step, std::strerror(err)));
}

// write(2) may write less than asked, and Linux caps one call near 2 GiB.
int write_all(int fd, const void* data, std::size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, std::min<std::size_t>(size, std::size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return 0;
}

// The temporary file beside the target: removed unless it was renamed into place, so that a
// failure at any step leaves the directory as it was.
class TempFile {
 public:
  TempFile(const std::string& path, const fs::path& dir) : path_(path) {
    std::string base = fs::path(path).filename().string();
    std::random_device entropy;
    // O_EXCL makes the name ours alone; 0666 lets the umask decide the final mode, as for
    // any file the user creates (mkstemp would force 0600).
    for (int attempt = 0; attempt < 100; ++attempt) {
      std::string name = fmt::format(".{}.tmp-{}-{:08x}", base, ::getpid(), entropy());
      tmp_ = (dir / name).string();
      fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0) return;
      if (errno != EEXIST) break;
    }
    int err = errno;
    fail_io(path_, fmt::format("cannot create a temporary file in '{}'", dir.string()), err);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!tmp_.empty()) ::unlink(tmp_.c_str());
  }

  void write(const void* data, std::size_t size) {
    if (int err = write_all(fd_, data, size)) fail_io(path_, fmt::format("writing '{}'", tmp_), err);
  }

  void commit() {
    if (::fsync(fd_) != 0) fail_errno("fsync of");
    int fd = fd_;
    fd_ = -1;
    // close() can report a deferred write error (NFS); the data is not safe until it didn't.
    if (::close(fd) != 0) fail_errno("closing");
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail_errno("renaming", " over it");
    tmp_.clear();
  }

 private:
  // Takes errno before building the message, whose allocation may change it.
  [[noreturn]] void fail_errno(std::string_view verb, std::string_view rest = {}) const {
    int err = errno;
    fail_io(path_, fmt::format("{} '{}'{}", verb, tmp_, rest), err);
  }

  const std::string& path_;
  std::string tmp_;
  int fd_ = -1;
};

// Without this the rename itself may not survive a crash.
void sync_directory(const std::string& path, const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    fail_io(path, fmt::format("written, but opening its directory '{}' to fsync it failed", dir.string()), err);
  }
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some filesystems cannot fsync a directory at all (EINVAL); PostgreSQL ignores that too.
  if (rc != 0 && err != EINVAL && err != EBADF)
    fail_io(path, fmt::format("written, but fsync of its directory '{}' failed", dir.string()), err);
}

}  // namespace

void write_safetensors(const std::string& path, const SafetensorsFile& file) {
  if (path.empty() || fs::path(path).filename().empty())
    throw CheckpointError(path, fmt::format("{}: cannot write checkpoint: the path names no file", path));
  validate(path, file);
  std::string header = header_of(path, file);
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";

  TempFile tmp(path, dir);
  std::uint64_t length = header.size();
  tmp.write(&length, sizeof length);
  tmp.write(header.data(), header.size());
  for (const NamedTensor& t : file.tensors) tmp.write(data_of(t), element_count(t) * item_size(t));
  tmp.commit();
  sync_directory(path, dir);
}

namespace {

// PyTorch's BatchNorm keeps a step counter that kiln has no use for; a checkpoint saved from
// torch carries it, so it must not count as unexpected.
bool is_batchnorm_counter(const Graph& graph, std::string_view name) {
  constexpr std::string_view suffix = ".num_batches_tracked";
  if (!name.ends_with(suffix)) return false;
  const Layer* layer = graph.find(name.substr(0, name.size() - suffix.size()));
  return layer != nullptr && layer->op == OpKind::batchnorm;
}

// When every missing name is present under one extra prefix ("module." from
// nn.DataParallel, "model." from a Lightning module), say so instead of leaving the user to
// spot it in the list.
std::string prefix_hint(const std::vector<std::string>& missing, const std::unordered_set<std::string>& unexpected) {
  if (missing.empty()) return {};
  const std::string& first = missing.front();
  for (const std::string& u : unexpected) {
    if (u.size() <= first.size() + 1 || !u.ends_with(first) || u[u.size() - first.size() - 1] != '.') continue;
    std::string prefix = u.substr(0, u.size() - first.size());
    bool all = true;
    for (const std::string& m : missing) all = all && unexpected.contains(prefix + m);
    if (all)
      return fmt::format("    hint: the file's names carry a prefix '{}' that the model's do not (saved from a wrapper "
                         "module?); strip it from the names",
                         prefix);
  }
  return {};
}

}  // namespace

std::vector<const NamedTensor*> match_weights(const Graph& graph, const SafetensorsFile& file, const std::string& path) {
  std::unordered_map<std::string_view, const NamedTensor*> by_name;
  for (const NamedTensor& t : file.tensors) by_name.emplace(t.name, &t);

  std::vector<const NamedTensor*> matched;
  std::vector<std::string> problems;
  std::vector<std::string> involved;
  std::vector<std::string> missing;
  std::unordered_set<std::string_view> used;
  for (const Param& p : graph.params()) {
    auto it = by_name.find(p.name);
    if (it == by_name.end()) {
      problems.push_back(fmt::format("{}: missing from the file (the model expects {})", p.name, dims_str(p.dims)));
      involved.push_back(p.name);
      missing.push_back(p.name);
      matched.push_back(nullptr);
      continue;
    }
    const NamedTensor& t = *it->second;
    used.insert(t.name);
    matched.push_back(&t);
    bool ok = true;
    if (t.type != TensorType::f32) {
      problems.push_back(fmt::format("{}: the file has an I64 tensor, the model expects a floating-point {}", p.name,
                                     p.buffer ? "buffer" : "parameter"));
      ok = false;
    }
    if (t.dims != p.dims) {
      problems.push_back(
          fmt::format("{}: the file has {}, the model expects {}", p.name, dims_str(t.dims), dims_str(p.dims)));
      ok = false;
    }
    if (!ok) involved.push_back(p.name);
  }
  std::unordered_set<std::string> unexpected;
  for (const NamedTensor& t : file.tensors) {
    if (used.contains(t.name) || is_batchnorm_counter(graph, t.name)) continue;
    problems.push_back(fmt::format("{}: unexpected, the model has no parameter or buffer of this name (the file has {})",
                                   t.name, dims_str(t.dims)));
    involved.push_back(t.name);
    unexpected.insert(t.name);
  }
  if (problems.empty()) return matched;

  std::string message = fmt::format("{}: does not match model '{}' ({} problem{}):", path, graph.name(), problems.size(),
                                    problems.size() == 1 ? "" : "s");
  for (const std::string& p : problems) message += "\n    " + p;
  if (std::string hint = prefix_hint(missing, unexpected); !hint.empty()) message += "\n" + hint;
  throw CheckpointError(path, message, std::move(involved));
}

}  // namespace kiln
