#pragma once

// Loops compiled twice, for the baseline x86-64 (SSE2) every build targets and for AVX2,
// with the copy chosen once per process by what the CPU has: the memory-bound and
// depthwise loops of the CPU kernels (kiln's GEMM has AVX2 and AVX-512 kernels of its own).
//
//   with_best_simd([&](auto) KILN_INLINE { ... the loop ... });
//
// The lambda's body is inlined into an AVX2 function, so the compiler vectorizes it 8 floats
// wide there; every helper it calls must be inline too (KILN_INLINE) to be compiled with it.
// Only "avx2" is enabled, not "fma": without FMA the compiler cannot contract a * b + c, so
// both copies compute every value the same way, and a result does not depend on the CPU's
// instruction set (only on thread counts where a kernel says so).

#define KILN_INLINE __attribute__((always_inline))

namespace kiln::math {

inline bool cpu_has_avx2() {
#if defined(__x86_64__)
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return avx2;
#else
  return false;
#endif
}

struct Avx2 {};
struct Baseline {};

#if defined(__x86_64__)
template <class F>
__attribute__((target("avx2"))) void run_avx2(const F& f) {
  f(Avx2{});
}
#endif

template <class F>
void with_best_simd(const F& f) {
#if defined(__x86_64__)
  if (cpu_has_avx2()) return run_avx2(f);
#endif
  f(Baseline{});
}

}  // namespace kiln::math
