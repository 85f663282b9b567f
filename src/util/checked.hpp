#pragma once

#include <cstdint>
#include <optional>

namespace kiln::detail {

// Sizes in a spec are user input: a product of dimensions may overflow 64 bits, and that
// must be a diagnostic, not undefined behaviour.
inline std::optional<std::int64_t> checked_mul(std::int64_t a, std::int64_t b) {
  std::int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

inline std::optional<std::int64_t> checked_add(std::int64_t a, std::int64_t b) {
  std::int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

inline std::optional<std::int64_t> checked_product(std::initializer_list<std::int64_t> xs) {
  std::int64_t r = 1;
  for (std::int64_t x : xs) {
    auto next = checked_mul(r, x);
    if (!next) return std::nullopt;
    r = *next;
  }
  return r;
}

// Floor division that rounds toward minus infinity (C++ '/' truncates toward zero), so that
// "the output would be -2x-2" is the number PyTorch's formula gives.
inline std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return -floor_div(-a, b); }

inline std::int64_t align_up(std::int64_t x, std::int64_t a) { return (x + a - 1) / a * a; }

}  // namespace kiln::detail
