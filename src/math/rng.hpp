#pragma once

// Counter-based random numbers: a value is a pure function of (key, counter), so the CPU
// and the GPU draw the same numbers in any order, a resumed run draws what an
// uninterrupted one would, and nothing needs to be stored (dropout masks are regenerated in
// backward).
#include <cstdint>

#include "math/hd.hpp"

namespace kiln::math {

// SplitMix64's finalizer: a bijective 64-bit mix with good avalanche.
KILN_HD std::uint64_t mix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A key for a stream of numbers, from up to three identifiers (seed, purpose, epoch...).
KILN_HD std::uint64_t stream_key(std::uint64_t a, std::uint64_t b = 0, std::uint64_t c = 0) {
  return mix64(a ^ mix64(b ^ mix64(c + 0x632BE59BD9B4E019ull)));
}

KILN_HD std::uint64_t random_u64(std::uint64_t key, std::uint64_t counter) { return mix64(key ^ mix64(counter)); }

// Uniform in [0, 1) with 24 random bits (exactly representable in float).
KILN_HD float random_uniform(std::uint64_t key, std::uint64_t counter) {
  return static_cast<float>(random_u64(key, counter) >> 40) * (1.0f / 16777216.0f);
}

// Uniform integer in [0, n) (n > 0); the modulo bias is below 2^-32 for n < 2^32.
KILN_HD std::uint32_t random_below(std::uint64_t key, std::uint64_t counter, std::uint32_t n) {
  return static_cast<std::uint32_t>(random_u64(key, counter) % n);
}

// Purposes, so that streams drawn from one seed never coincide.
enum : std::uint64_t {
  kStreamShuffle = 1,
  kStreamAugment = 2,
  kStreamDropout = 3,
  kStreamInit = 4,
  kStreamSynth = 5,
};

}  // namespace kiln::math
