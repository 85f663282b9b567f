#pragma once

/// @file
/// Numbers for people: counts, bytes and FLOPs as the CLI prints them.

#include <cstdint>
#include <string>

#include "kiln/export.hpp"

namespace kiln {

/// "1,234,567"
KILN_API std::string format_count(std::int64_t n);
/// "512 B", "1.5 MiB"
KILN_API std::string format_bytes(std::int64_t bytes);
/// "35.17M" (FLOPs with an SI prefix)
KILN_API std::string format_flops(std::int64_t flops);

}  // namespace kiln
