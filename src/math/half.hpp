#pragma once

// IEEE binary16 (fp16) and bfloat16 (bf16) to and from fp32, written once for both backends.
// The CPU reads half-width safetensors through these, and they are the rounding the CPU
// oracle of a bf16/fp16 plan applies where a GPU plan stores half-width values (fp32 math in
// between, as on a GPU). Rounding is to nearest, ties to even — CUDA's __float2half_rn and
// __float2bfloat16_rn, PyTorch's .half() and .bfloat16(), x86's F16C — with overflow to
// infinity, fp16's subnormals kept, and NaN kept a NaN (made quiet).
#include <cstdint>
#include <cstring>

#include "kiln/types.hpp"
#include "math/hd.hpp"

namespace kiln::math {

KILN_HD std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

KILN_HD float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Adds one unit in the last place to `kept` when the `dropped` low bits of a value, of which
// `half` is the midpoint, round it up: above the midpoint, or on it with `kept` odd.
KILN_HD std::uint32_t round_half_even(std::uint32_t kept, std::uint32_t dropped, std::uint32_t half) {
  return kept + ((dropped > half || (dropped == half && (kept & 1u))) ? 1u : 0u);
}

KILN_HD std::uint16_t float_to_fp16_bits(float f) {
  const std::uint32_t x = float_bits(f);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN, quiet
  if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520 (or inf): inf
  const std::uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
  if (e >= 113)  // normal in fp16: exponent e - 127 + 15; a carry out of the mantissa bumps it
    return static_cast<std::uint16_t>(sign | round_half_even(((e - 112) << 10) | ((a >> 13) & 0x3ffu), a & 0x1fffu, 0x1000u));
  if (e < 102) return sign;  // below 2^-25: zero (2^-25 itself is the tie, to even: zero too)
  // Subnormal in fp16: a multiple of 2^-24, m * 2^(e - 150) / 2^-24 = m >> (126 - e).
  const std::uint32_t shift = 126 - e;  // 14 .. 24
  return static_cast<std::uint16_t>(sign | round_half_even(m >> shift, m & ((1u << shift) - 1u), 1u << (shift - 1)));
}

KILN_HD float fp16_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return bits_float(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-08f;  // m * 2^-24, exact
    return sign ? -v : v;
  }
  return bits_float(sign | ((e + 112) << 23) | (m << 13));
}

KILN_HD std::uint16_t float_to_bf16_bits(float f) {
  const std::uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // NaN, quiet
  // Overflow needs no case: the largest finite values round up into the exponent of infinity.
  return static_cast<std::uint16_t>(round_half_even(x >> 16, x & 0xffffu, 0x8000u));
}

KILN_HD float bf16_bits_to_float(std::uint16_t h) { return bits_float(static_cast<std::uint32_t>(h) << 16); }

// x as `dtype` stores it, widened back: the nearest fp16 or bf16 value (fp32: x itself).
KILN_HD float round_to(DType dtype, float x) {
  switch (dtype) {
    case DType::f16: return fp16_bits_to_float(float_to_fp16_bits(x));
    case DType::bf16: return bf16_bits_to_float(float_to_bf16_bits(x));
    case DType::f32: break;
  }
  return x;
}

}  // namespace kiln::math
