#pragma once

// What the harnesses share: a private scratch directory (in memory where /dev/shm exists, so
// that a file-reading harness is not limited by the disk), and writing one input to a file.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <unistd.h>

namespace kiln::fuzz {

namespace fs = std::filesystem;

// Removed at exit; one per process, so parallel fuzzing jobs (-jobs=N) do not collide.
class Scratch {
 public:
  explicit Scratch(const std::string& name) {
    std::error_code ec;
    fs::path base = fs::is_directory("/dev/shm", ec) ? fs::path("/dev/shm") : fs::temp_directory_path();
    dir_ = base / ("kiln_fuzz_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_, ec);
    fs::create_directories(dir_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  const fs::path& dir() const { return dir_; }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

 private:
  fs::path dir_;
};

inline void write_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();  // the harness's own failure, not the reader's
}

}  // namespace kiln::fuzz
