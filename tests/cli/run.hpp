#pragma once

// Runs the kiln executable as a user would and captures its exit code, stdout and stderr.
#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace kiln::test {

// A fresh directory under the system's temporary one, removed with everything in it (its
// permissions restored first: tests take them away).
struct Scratch {
  std::filesystem::path path;
  explicit Scratch(const std::string& name)
      : path(std::filesystem::temp_directory_path() / ("kiln_cli_" + name + "_" + std::to_string(getpid()))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~Scratch() {
    restore(path);
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  std::string operator/(const std::string& child) const { return (path / child).string(); }

 private:
  // Gives every directory below `dir` its owner's permissions back, top down, so that
  // remove_all can enter them.
  static void restore(const std::filesystem::path& dir) {
    std::error_code ec;
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, std::filesystem::perm_options::add, ec);
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
      if (entry.is_directory(ec) && !entry.is_symlink(ec)) restore(entry.path());
  }
};

struct CliRun {
  int code = -1;
  std::string out;
  std::string err;
};

inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// `args` is passed to /bin/sh after the binary; quote as needed.
inline CliRun run_kiln(const std::string& args, const std::string& env = "") {
  static int counter = 0;
  std::string base = "/tmp/kiln_cli_test_" + std::to_string(getpid()) + "_" + std::to_string(counter++);
  std::string cmd = env + " " + KILN_BIN + " " + args + " >" + base + ".out 2>" + base + ".err </dev/null";
  int status = std::system(cmd.c_str());
  CliRun r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(base + ".out");
  r.err = slurp(base + ".err");
  std::remove((base + ".out").c_str());
  std::remove((base + ".err").c_str());
  return r;
}

inline std::string src(const std::string& relative) { return std::string(KILN_SOURCE_DIR) + "/" + relative; }

inline bool has(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

}  // namespace kiln::test
