// File handling shared by the dataset readers and writers.
#include "data/data_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <fstream>

#include "kiln/error.hpp"

namespace kiln::detail {

namespace fs = std::filesystem;

std::vector<std::uint8_t> read_file(const std::string& path, const char* what) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (fs::is_directory(status)) throw DataError(path, -1, fmt::format("{}: is a directory, not {}", path, what));
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

bool present(const fs::path& path) {
  std::error_code ec;
  bool there = fs::exists(path, ec);
  if (ec) throw DataError(path.string(), -1, fmt::format("{}: cannot read: {}", path.string(), ec.message()));
  return there;
}

void require_directory(const std::string& dir, const char* format, const char* holds, const char* hint) {
  std::error_code ec;
  if (!present(dir)) throw DataError(dir, -1, fmt::format("{} directory '{}' does not exist\n    hint: {}", format, dir, hint));
  if (!fs::is_directory(dir, ec))
    throw DataError(dir, -1, fmt::format("'{}' is not a directory; --data names the directory holding {}", dir, holds));
}

std::vector<std::string> read_class_names(const std::string& path) {
  std::vector<std::string> names;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return names;  // optional; a FIFO or directory there is not it
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

void make_directory(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw DataError(dir, -1,
                    fmt::format("{}: cannot create the directory: {}", dir,
                                ec ? ec.message() : std::string("a file of that name exists")));
}

void write_atomically(const fs::path& path, const std::string& bytes) {
  std::string target = path.string();
  std::string tmpl = (path.parent_path() / fmt::format(".{}.XXXXXX", path.filename().string())).string();
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) throw DataError(target, -1, fmt::format("{}: cannot create a temporary file: {}", target, std::strerror(errno)));
  auto fail = [&](const char* what) {
    int err = errno;
    ::close(fd);
    ::unlink(tmpl.c_str());
    throw DataError(target, -1, fmt::format("{}: {}: {}", target, what, std::strerror(err)));
  };
  const char* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write failed");
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fchmod(fd, 0644) != 0) fail("cannot set permissions");
  if (::fsync(fd) != 0) fail("fsync failed");
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmpl.c_str());
    throw DataError(target, -1, fmt::format("{}: close failed: {}", target, std::strerror(err)));
  }
  if (::rename(tmpl.c_str(), target.c_str()) != 0) {
    int err = errno;
    ::unlink(tmpl.c_str());
    throw DataError(target, -1, fmt::format("{}: cannot rename the temporary file into place: {}", target, std::strerror(err)));
  }
}

void sync_directory(const std::string& dir) {
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::string name_lines(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += name + "\n";
  return out;
}

}  // namespace kiln::detail
