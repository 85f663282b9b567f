// The loops compiled twice (math/simd.hpp): the AVX2 copy and the baseline copy compute
// every value the same way, so results do not depend on the CPU's instruction set.
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <random>
#include <vector>

#include "math/reduce.hpp"
#include "math/simd.hpp"

namespace kiln::test {
namespace {

struct Sums {
  double sum, sum_double, squares, sum2, centered;
  bool operator==(const Sums& o) const {
    auto same = [](double a, double b) { return std::bit_cast<std::uint64_t>(a) == std::bit_cast<std::uint64_t>(b); };
    return same(sum, o.sum) && same(sum_double, o.sum_double) && same(squares, o.squares) && same(sum2, o.sum2) && same(centered, o.centered);
  }
};

TEST(Simd, Avx2AndBaselineCopiesAgreeToTheBit) {
  if (!math::cpu_has_avx2()) GTEST_SKIP() << "this CPU has no AVX2: only the baseline copy runs";
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.5f, 2.0f);
  for (std::int64_t n : {1, 15, 16, 17, 33, 1024, 1031}) {
    for (std::int64_t stride : {1, 3}) {
      std::vector<float> a(static_cast<std::size_t>(n * stride)), b(a.size());
      for (auto& v : a) v = normal(rng);
      for (auto& v : b) v = normal(rng);
      auto compute = [&](auto) KILN_INLINE {
        Sums s{};
        s.sum = math::sum_floats(a.data(), n, stride);
        s.squares = math::sum_squared_deviations(a.data(), n, 0.25f, stride);
        s.sum_double = math::sum_floats<double>(a.data(), n, stride);
        s.sum2 = 0.0, s.centered = 0.0;
        math::sum_and_centered_dot(a.data(), b.data(), n, 0.25f, s.sum2, s.centered, stride);
        return s;
      };
      Sums wide{}, plain{};
      math::run_avx2([&](auto simd) KILN_INLINE { wide = compute(simd); });
      plain = compute(math::Baseline{});
      EXPECT_TRUE(wide == plain) << "n " << n << ", stride " << stride;
      // And close to the plain double sum.
      double exact = 0.0;
      for (std::int64_t i = 0; i < n; ++i) exact += a[static_cast<std::size_t>(i * stride)];
      EXPECT_NEAR(plain.sum, exact, 1e-4 * (1.0 + static_cast<double>(n)));
    }
  }
}

}  // namespace
}  // namespace kiln::test
