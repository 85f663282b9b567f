#pragma once
// Helpers for the safetensors tests: a scratch directory, raw file crafting, and an
// assertion that a call throws a CheckpointError naming the file.
#include <fmt/format.h>
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "kiln/checkpoint.hpp"
#include "test_util.hpp"

namespace kiln::test::ckpt {

// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kiln-safetensors-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  // Every name in the directory (hidden ones too: that is where temporary files would hide).
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(path_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::string path_;
};

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The host's bytes of `values`: little-endian on every machine kiln builds for.
template <typename T>
std::string le_bytes(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

inline std::string le16(const std::vector<std::uint16_t>& bits) { return le_bytes(bits); }

// A safetensors file with exactly this header text (no padding added) and data buffer.
inline void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  write_bytes(path, le_bytes(std::vector<std::uint64_t>{header.size()}) + header + data);
}

inline NamedTensor f32_tensor(std::string name, std::vector<std::int64_t> dims, std::vector<float> values) {
  NamedTensor t;
  t.name = std::move(name);
  t.type = TensorType::f32;
  t.dims = std::move(dims);
  t.f32 = std::move(values);
  return t;
}

inline NamedTensor i64_tensor(std::string name, std::vector<std::int64_t> dims, std::vector<std::int64_t> values) {
  NamedTensor t;
  t.name = std::move(name);
  t.type = TensorType::i64;
  t.dims = std::move(dims);
  t.i64 = std::move(values);
  return t;
}

// Runs `f`, which must throw a CheckpointError for `path` whose message starts with the path
// and contains each of `says`; returns it for further checks.
inline CheckpointError expect_checkpoint_error(const std::function<void()>& f, const std::string& path,
                                               const std::vector<std::string>& says) {
  try {
    f();
  } catch (const CheckpointError& e) {
    std::string message = e.what();
    EXPECT_EQ(e.file(), path);
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
    for (const std::string& s : says) EXPECT_TRUE(contains(message, s)) << "'" << s << "' not in:\n" << message;
    EXPECT_EQ(e.exit_code(), ExitCode::invalid_input);
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a CheckpointError, got: " << e.what();
    return CheckpointError(path, "");
  }
  ADD_FAILURE() << "expected a CheckpointError for " << path;
  return CheckpointError(path, "");
}

}  // namespace kiln::test::ckpt
