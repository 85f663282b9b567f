// kiln train on an 80-column terminal: no line it prints (header, progress redraws, epoch
// lines, the last lines) is wider than the terminal, even with a model path twice that long;
// the progress line says epoch k/N, step i/M and an ETA.
#include <gtest/gtest.h>

#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "run.hpp"

namespace kiln::test {
namespace {

// Runs `args` under a pseudo-terminal `columns` wide and returns everything it printed
// (stdout and stderr both go to the terminal).
std::string on_terminal(const std::vector<std::string>& args, unsigned short columns) {
  winsize size{};
  size.ws_col = columns;
  size.ws_row = 24;
  int master = -1;
  const pid_t pid = ::forkpty(&master, nullptr, nullptr, &size);
  if (pid < 0) return "forkpty failed";
  if (pid == 0) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  std::string out;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(master, buffer, sizeof buffer);
    if (n > 0) out.append(buffer, static_cast<std::size_t>(n));
    else if (n < 0 && errno == EINTR) continue;
    else break;  // EIO once the child has exited and closed the terminal
  }
  ::close(master);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return out;
}

// The lines a terminal shows: split at \n and at \r (a redraw), escape sequences removed.
std::vector<std::string> shown_lines(const std::string& text) {
  std::vector<std::string> lines(1);
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n' || c == '\r') {
      lines.emplace_back();
    } else if (c == '\033') {
      while (i + 1 < text.size() && !std::isalpha(static_cast<unsigned char>(text[i + 1]))) ++i;
      ++i;  // the final letter
    } else {
      lines.back() += c;
    }
  }
  return lines;
}

std::size_t characters(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

TEST(Terminal, EveryLineFitsEightyColumns) {
  Scratch s("terminal");
  ASSERT_EQ(run_kiln("synth --out " + (s / "data") + " --train 480 --test 32").code, 0);
  // A model file whose path alone is wider than the terminal.
  const std::string deep = s / (std::string(60, 'd') + "/" + std::string(60, 'e'));
  std::filesystem::create_directories(deep);
  std::filesystem::copy_file(src("tests/fuzz/tiny.yaml"), deep + "/tiny.yaml");
  const std::string out = on_terminal({KILN_BIN, "train", deep + "/tiny.yaml", "--data", s / "data", "--epochs", "2",
                                       "--batch", "16", "--threads", "1", "--out", deep + "/run"},
                                      80);
  ASSERT_TRUE(has(out, "done: 60 steps")) << out;
  ASSERT_TRUE(has(out, "epoch 1/2 step ")) << out;
  EXPECT_TRUE(has(out, "ETA ")) << out;
  for (const std::string& line : shown_lines(out))
    EXPECT_LE(characters(line), 80u) << "a line wider than the terminal:\n" << line;
}

}  // namespace
}  // namespace kiln::test
