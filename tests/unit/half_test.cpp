// fp16 and bf16 conversions (math/half.hpp): every half-width value round-trips; fp32 to
// fp16 against the CPU's own F16C instruction (round to nearest even) over a sweep of all
// fp32 bit patterns; fp32 to bf16 against a rounding written the slow way (the two nearest
// bf16 values compared in double); the values at the edges spelled out.
#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "math/half.hpp"

namespace kiln::test {
namespace {

using math::bits_float;
using math::float_bits;

bool is_nan_fp16(std::uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }
bool is_nan_bf16(std::uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0; }

TEST(Half, EveryFp16AndBf16ValueRoundTrips) {
  for (std::uint32_t i = 0; i < 0x10000u; ++i) {
    const auto h = static_cast<std::uint16_t>(i);
    const float f16 = math::fp16_bits_to_float(h), b16 = math::bf16_bits_to_float(h);
    if (is_nan_fp16(h)) {
      EXPECT_TRUE(std::isnan(f16)) << std::hex << i;
      EXPECT_TRUE(is_nan_fp16(math::float_to_fp16_bits(f16))) << std::hex << i;
    } else {
      ASSERT_EQ(math::float_to_fp16_bits(f16), h) << std::hex << i << " " << f16;
    }
    if (is_nan_bf16(h)) {
      EXPECT_TRUE(std::isnan(b16)) << std::hex << i;
      EXPECT_TRUE(is_nan_bf16(math::float_to_bf16_bits(b16))) << std::hex << i;
    } else {
      ASSERT_EQ(math::float_to_bf16_bits(b16), h) << std::hex << i << " " << b16;
    }
  }
}

__attribute__((target("f16c"))) std::uint16_t f16c(float f) {
  return static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// Every 97th fp32 bit pattern (44 million, both signs, all exponents) and the neighbourhood
// of every fp16 rounding boundary: the same bits as the hardware's conversion. NaNs only
// need to stay NaNs (payloads may differ).
TEST(Half, Fp32ToFp16MatchesF16c) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "this CPU has no F16C to compare with";
  auto check = [](std::uint32_t u) {
    const float f = bits_float(u);
    const std::uint16_t got = math::float_to_fp16_bits(f), want = f16c(f);
    if (std::isnan(f)) return is_nan_fp16(got) && is_nan_fp16(want);
    return got == want;
  };
  std::uint64_t wrong = 0, first = 0;
  for (std::uint64_t u = 0; u <= 0xffffffffull; u += 97)
    if (!check(static_cast<std::uint32_t>(u)) && wrong++ == 0) first = u;
  // Midpoints between neighbouring fp16 values, and one ulp of fp32 either side.
  for (std::uint32_t i = 0; i < 0x7c00u; ++i) {
    const double mid = (static_cast<double>(math::fp16_bits_to_float(static_cast<std::uint16_t>(i))) +
                        math::fp16_bits_to_float(static_cast<std::uint16_t>(i + 1))) / 2;
    const std::uint32_t m = float_bits(static_cast<float>(mid));
    for (std::uint32_t u : {m - 1, m, m + 1, m | 0x80000000u})
      if (!check(u) && wrong++ == 0) first = u;
  }
  EXPECT_EQ(wrong, 0u) << "first at fp32 bits 0x" << std::hex << first;
}

// The nearest bf16 value the slow way: the two candidates around x, compared in double,
// ties to the even one.
std::uint16_t bf16_reference(float x) {
  const std::uint32_t u = float_bits(x);
  const auto lo = static_cast<std::uint16_t>(u >> 16);
  const auto hi = static_cast<std::uint16_t>(lo + 1);  // the next one away from zero (may be inf)
  const double dlo = std::fabs(static_cast<double>(x) - math::bf16_bits_to_float(lo));
  // Past the largest finite value the next one up is infinity, which rounding reaches from
  // 2^128 (IEEE: round as if the exponent were unbounded, then overflow).
  const double hi_value = (hi & 0x7fffu) == 0x7f80u ? std::copysign(std::ldexp(1.0, 128), x) : math::bf16_bits_to_float(hi);
  const double dhi = std::fabs(hi_value - x);
  if ((u & 0xffffu) == 0) return lo;
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1u) ? hi : lo;
}

TEST(Half, Fp32ToBf16MatchesTheDefinition) {
  std::uint64_t wrong = 0, first = 0;
  for (std::uint64_t u = 0; u <= 0xffffffffull; u += 89) {
    const float f = bits_float(static_cast<std::uint32_t>(u));
    if (std::isnan(f) || std::isinf(f)) continue;
    if (math::float_to_bf16_bits(f) != bf16_reference(f) && wrong++ == 0) first = u;
  }
  EXPECT_EQ(wrong, 0u) << "first at fp32 bits 0x" << std::hex << first;
}

TEST(Half, EdgesAndRoundTo) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(math::float_to_fp16_bits(65504.0f), 0x7bffu);                       // fp16's largest
  EXPECT_EQ(math::float_to_fp16_bits(65519.0f), 0x7bffu);                       // below the midpoint
  EXPECT_EQ(math::float_to_fp16_bits(65520.0f), 0x7c00u);                       // the midpoint: to inf (even)
  EXPECT_EQ(math::float_to_fp16_bits(-inf), 0xfc00u);
  EXPECT_EQ(math::float_to_fp16_bits(std::ldexp(1.0f, -24)), 0x0001u);          // smallest subnormal
  EXPECT_EQ(math::float_to_fp16_bits(std::ldexp(1.0f, -25)), 0x0000u);          // its half: tie to zero
  EXPECT_EQ(math::float_to_fp16_bits(std::ldexp(3.0f, -26)), 0x0001u);          // 0.75 of it: up
  EXPECT_EQ(math::float_to_fp16_bits(-std::ldexp(1.0f, -14)), 0x8400u);         // smallest normal
  EXPECT_EQ(math::float_to_fp16_bits(1.0f / 3.0f), 0x3555u);
  EXPECT_EQ(math::float_to_bf16_bits(1.0f / 3.0f), 0x3eabu);
  EXPECT_EQ(math::float_to_bf16_bits(bits_float(0x7f7fffffu)), 0x7f80u);        // fp32's largest: to inf
  EXPECT_EQ(math::float_to_bf16_bits(bits_float(0x3f808000u)), 0x3f80u);        // a tie: to even (down)
  EXPECT_EQ(math::float_to_bf16_bits(bits_float(0x3f818000u)), 0x3f82u);        // a tie: to even (up)
  EXPECT_EQ(math::round_to(DType::f32, 0.1f), 0.1f);
  EXPECT_EQ(math::round_to(DType::f16, 0.1f), 0.0999755859375f);
  EXPECT_EQ(math::round_to(DType::bf16, 0.1f), 0.10009765625f);
  EXPECT_TRUE(std::isnan(math::round_to(DType::bf16, std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isnan(math::round_to(DType::f16, -std::numeric_limits<float>::signaling_NaN())));
}

}  // namespace
}  // namespace kiln::test
