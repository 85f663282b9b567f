#pragma once

#include <optional>
#include <string_view>

namespace kiln::detail {

// Evaluates a number written as a small arithmetic expression: decimals, + - * / ^, and
// parentheses ("0.1", "1/9", "11.5/(1024*(1+1/0.15))"), so recipe values can be written as
// their derivation. nullopt when the text is not such an expression or divides by zero.
std::optional<double> eval_number(std::string_view text);

// A whole-string integer ("12", "-3"); nullopt otherwise (also for "3.0" and overflow).
std::optional<long long> parse_integer(std::string_view text);

}  // namespace kiln::detail
