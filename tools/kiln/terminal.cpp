#include "terminal.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

namespace kiln::cli {

namespace {

constexpr const char* kEllipsis = "\u2026";

bool continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// The byte offset of character `chars` of `text` (text.size() past the end).
std::size_t byte_of(const std::string& text, std::size_t chars) {
  std::size_t i = 0;
  for (std::size_t seen = 0; i < text.size(); ++i) {
    if (continuation(static_cast<unsigned char>(text[i]))) continue;
    if (seen++ == chars) return i;
  }
  return text.size();
}

}  // namespace

std::size_t terminal_width(int fd) {
  if (!::isatty(fd)) return 0;
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

std::size_t display_width(const std::string& text) {
  std::size_t n = 0;
  for (char c : text) n += continuation(static_cast<unsigned char>(c)) ? 0 : 1;
  return n;
}

std::string fit(const std::string& line, std::size_t width) {
  if (width == 0 || display_width(line) <= width) return line;
  if (width == 1) return kEllipsis;
  return line.substr(0, byte_of(line, width - 1)) + kEllipsis;
}

std::string shorten_path(const std::string& path, std::size_t width) {
  if (display_width(path) <= width) return path;
  // Drop leading components while "…/rest" is too long.
  std::size_t at = path.find('/');
  while (at != std::string::npos) {
    const std::string rest = path.substr(at + 1);
    if (!rest.empty() && display_width(rest) + 2 <= width) return std::string(kEllipsis) + "/" + rest;
    at = path.find('/', at + 1);
  }
  const std::size_t slash = path.rfind('/');
  return fit(slash == std::string::npos ? path : path.substr(slash + 1), width);
}

}  // namespace kiln::cli
