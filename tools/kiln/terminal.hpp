#pragma once

// Lines that fit a terminal: its width, and text shortened to a width (long paths lose their
// leading folders first). Counts characters (UTF-8 code points), not bytes.
#include <cstddef>
#include <string>

namespace kiln::cli {

// The width of the terminal on `fd`, or 0 when `fd` is not a terminal.
std::size_t terminal_width(int fd);

// Characters in UTF-8 text.
std::size_t display_width(const std::string& text);

// `path` in at most `width` characters: whole when it fits, else "…/" and as many of its
// trailing components as fit (the file name, cut at the end, when even that does not).
std::string shorten_path(const std::string& path, std::size_t width);

// `line` cut to `width` characters, ending in "…" when cut; whole when width is 0 (no terminal).
std::string fit(const std::string& line, std::size_t width);

}  // namespace kiln::cli
