#include "layers/gemm.hpp"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace kiln::detail {

namespace {

void sgemm(Trans trans_a, Trans trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
           std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  auto op = [](Trans t) { return t == Trans::yes ? CblasTrans : CblasNoTrans; };
  cblas_sgemm(CblasRowMajor, op(trans_a), op(trans_b), static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

// ---- kiln's own kernels: C (+)= A * B, B row-major ---------------------------------------
//
// The convolutions' products are thin (M = 32..64 channels, K = 75..800, N = one sample's
// pixels): OpenBLAS reaches ~60-95 GFLOP/s a core on them (Zen 4), much of its time going
// to packing. These kernels pack nothing. A tile of C (8 rows x 32 columns on AVX-512, 6 x 16
// on AVX2) lives in 16 or 12 registers; each step of k loads two vectors of a row of B and
// broadcasts one element of A per row, read through strides, so A may be W, W^T or a column
// matrix as it lies in memory. AVX-512 reaches ~100-115 GFLOP/s a core on the same shapes.
// Every element of C is one sum over k in order, so results do not depend on how C is
// tiled or split among threads.

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KILN_X86 1
#define KILN_AVX512 __attribute__((target("avx512f")))
#define KILN_AVX2 __attribute__((target("avx2,fma")))
// Without full unrolling GCC keeps the accumulators in registers but also stores them to
// the stack on every step of k, which halves the kernels' speed.
#if defined(__clang__)
#define KILN_UNROLL _Pragma("unroll")
#else
#define KILN_UNROLL _Pragma("GCC unroll 8")
#endif
#else
#define KILN_X86 0
#endif

bool cpu_has(GemmKernel kernel) {
#if KILN_X86
  __builtin_cpu_init();  // this may run during static initialization, before libgcc's
  if (kernel == GemmKernel::avx512) return __builtin_cpu_supports("avx512f");
  if (kernel == GemmKernel::avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return kernel == GemmKernel::openblas;
}

GemmKernel best_kernel() {
  for (GemmKernel k : {GemmKernel::avx512, GemmKernel::avx2})
    if (cpu_has(k)) return k;
  return GemmKernel::openblas;
}

GemmKernel g_kernel = best_kernel();

// What a kernel needs to know about A: element (i, kk) is at a[i * row + kk * col].
struct Strided {
  const float* a;
  std::int64_t row, col;
};

#if KILN_X86
// One AVX-512 tile: R rows (R <= 8) of A against the 32 columns of B (Full) or those that
// masks m0 and m1 select (unmasked loads make the loop ~10% faster).
template <int R, bool Full>
KILN_AVX512 void tile512(std::int64_t k, Strided a, const float* b, std::int64_t ldb, float* c, std::int64_t ldc,
                         __mmask16 m0, __mmask16 m1, bool accumulate) {
  __m512 lo[R], hi[R];
  KILN_UNROLL
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm512_setzero_ps();
  for (std::int64_t kk = 0; kk < k; ++kk) {
    const float* bk = b + kk * ldb;
    const __m512 b0 = Full ? _mm512_loadu_ps(bk) : _mm512_maskz_loadu_ps(m0, bk);
    const __m512 b1 = Full ? _mm512_loadu_ps(bk + 16) : _mm512_maskz_loadu_ps(m1, bk + 16);
    const float* ak = a.a + kk * a.col;
    KILN_UNROLL
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(ak[r * a.row]);
      lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
      hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
    }
  }
  KILN_UNROLL
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
    if (accumulate) {
      lo[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), lo[r]);
      hi[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), hi[r]);
    }
    _mm512_mask_storeu_ps(cr, m0, lo[r]);
    _mm512_mask_storeu_ps(cr + 16, m1, hi[r]);
  }
}

template <int R>
KILN_AVX512 void rows512(std::int64_t n, std::int64_t k, Strided a, const float* b, std::int64_t ldb, float* c,
                         std::int64_t ldc, bool accumulate) {
  std::int64_t j = 0;
  for (; j + 32 <= n; j += 32) tile512<R, true>(k, a, b + j, ldb, c + j, ldc, 0xFFFF, 0xFFFF, accumulate);
  const std::int64_t w = n - j;
  if (w == 0) return;
  const auto m0 = static_cast<__mmask16>(w >= 16 ? 0xFFFF : (1u << w) - 1);
  const auto m1 = static_cast<__mmask16>(w > 16 ? (1u << (w - 16)) - 1 : 0);
  tile512<R, false>(k, a, b + j, ldb, c + j, ldc, m0, m1, accumulate);
}

// One AVX2 tile: R rows (R <= 6) of A against 16 columns of B, or those where masks m0 and
// m1 are set.
template <int R, bool Full>
KILN_AVX2 void tile256(std::int64_t k, Strided a, const float* b, std::int64_t ldb, float* c, std::int64_t ldc,
                       __m256i m0, __m256i m1, bool accumulate) {
  __m256 lo[R], hi[R];
  KILN_UNROLL
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
  for (std::int64_t kk = 0; kk < k; ++kk) {
    const float* bk = b + kk * ldb;
    // Rows of B far apart defeat the hardware prefetcher on the narrower AVX2 tile. (An
    // integer address: past the last row there is no array to point into.)
    _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(bk) + 16 * ldb), _MM_HINT_T0);
    const __m256 b0 = Full ? _mm256_loadu_ps(bk) : _mm256_maskload_ps(bk, m0);
    const __m256 b1 = Full ? _mm256_loadu_ps(bk + 8) : _mm256_maskload_ps(bk + 8, m1);
    const float* ak = a.a + kk * a.col;
    KILN_UNROLL
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(ak + r * a.row);
      lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
      hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
    }
  }
  // Masked stores are slow on AMD's cores (microcoded): full tiles store plainly.
  KILN_UNROLL
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
    if constexpr (Full) {
      if (accumulate)
        lo[r] = _mm256_add_ps(_mm256_loadu_ps(cr), lo[r]), hi[r] = _mm256_add_ps(_mm256_loadu_ps(cr + 8), hi[r]);
      _mm256_storeu_ps(cr, lo[r]);
      _mm256_storeu_ps(cr + 8, hi[r]);
    } else {
      if (accumulate) {
        lo[r] = _mm256_add_ps(_mm256_maskload_ps(cr, m0), lo[r]);
        hi[r] = _mm256_add_ps(_mm256_maskload_ps(cr + 8, m1), hi[r]);
      }
      _mm256_maskstore_ps(cr, m0, lo[r]);
      _mm256_maskstore_ps(cr + 8, m1, hi[r]);
    }
  }
}

template <int R>
KILN_AVX2 void rows256(std::int64_t n, std::int64_t k, Strided a, const float* b, std::int64_t ldb, float* c,
                       std::int64_t ldc, bool accumulate) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), all = _mm256_set1_epi32(-1);
  std::int64_t j = 0;
  for (; j + 16 <= n; j += 16) tile256<R, true>(k, a, b + j, ldb, c + j, ldc, all, all, accumulate);
  const auto w = static_cast<int>(n - j);
  if (w == 0) return;
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(w), lanes);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(w - 8), lanes);
  tile256<R, false>(k, a, b + j, ldb, c + j, ldc, m0, m1, accumulate);
}

struct Avx512 {
  static constexpr int kRows = 8;
  template <int R>
  static void rows(std::int64_t n, std::int64_t k, Strided a, const float* b, std::int64_t ldb, float* c,
                   std::int64_t ldc, bool acc) {
    rows512<R>(n, k, a, b, ldb, c, ldc, acc);
  }
};

struct Avx2 {
  static constexpr int kRows = 6;
  template <int R>
  static void rows(std::int64_t n, std::int64_t k, Strided a, const float* b, std::int64_t ldb, float* c,
                   std::int64_t ldc, bool acc) {
    rows256<R>(n, k, a, b, ldb, c, ldc, acc);
  }
};

// The last `left` (< Isa::kRows) rows.
template <class Isa, int R>
void rest(std::int64_t left, std::int64_t n, std::int64_t k, Strided a, const float* b, std::int64_t ldb, float* c,
          std::int64_t ldc, bool acc) {
  if constexpr (R > 0) {
    if (left == R) return Isa::template rows<R>(n, k, a, b, ldb, c, ldc, acc);
    rest<Isa, R - 1>(left, n, k, a, b, ldb, c, ldc, acc);
  }
}

// C (m x n) (+)= A (m x k) * B (k x n), in blocks of Isa::kRows rows.
template <class Isa>
void own_gemm(std::int64_t m, std::int64_t n, std::int64_t k, Strided a, const float* b, std::int64_t ldb, float* c,
              std::int64_t ldc, bool acc) {
  std::int64_t i = 0;
  for (; i + Isa::kRows <= m; i += Isa::kRows)
    Isa::template rows<Isa::kRows>(n, k, {a.a + i * a.row, a.row, a.col}, b, ldb, c + i * ldc, ldc, acc);
  rest<Isa, Isa::kRows - 1>(m - i, n, k, {a.a + i * a.row, a.row, a.col}, b, ldb, c + i * ldc, ldc, acc);
}
#undef KILN_UNROLL
#undef KILN_AVX2
#undef KILN_AVX512
#endif

// Whether kiln's kernels take this product.
bool own(Trans trans_b, float alpha, float beta) {
  return g_kernel != GemmKernel::openblas && trans_b == Trans::no && alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
}

void product(Trans trans_a, Trans trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
             std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
#if KILN_X86
  if (own(trans_b, alpha, beta)) {
    const Strided sa = trans_a == Trans::yes ? Strided{a, 1, lda} : Strided{a, lda, 1};
    if (g_kernel == GemmKernel::avx512) return own_gemm<Avx512>(m, n, k, sa, b, ldb, c, ldc, beta == 1.0f);
    return own_gemm<Avx2>(m, n, k, sa, b, ldb, c, ldc, beta == 1.0f);
  }
#endif
  sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Blocks narrower than this run worse than fewer, wider ones.
constexpr std::int64_t kMinBlock = 16;

}  // namespace

GemmKernel gemm_kernel() { return g_kernel; }

bool set_gemm_kernel(GemmKernel kernel) {
  if (!cpu_has(kernel)) return false;
  g_kernel = kernel;
  return true;
}

int gemm_team(int threads) {
  return g_kernel != GemmKernel::openblas || openblas_get_num_threads() == 1 ? std::max(1, threads) : 1;
}

void gemm(Trans trans_a, Trans trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc, int threads) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    // An empty batch: C = beta * C, done here because BLAS implementations differ on k == 0.
    for (std::int64_t r = 0; r < m; ++r)
      for (std::int64_t q = 0; q < n; ++q) c[r * ldc + q] = beta == 0.0f ? 0.0f : beta * c[r * ldc + q];
    return;
  }
  const bool split_n = n >= m;
  const std::int64_t extent = split_n ? n : m;
  // Never several OpenBLAS calls at once while OpenBLAS has threads of its own.
  const int team = own(trans_b, alpha, beta) || openblas_get_num_threads() == 1 ? std::max(1, threads) : 1;
  const std::int64_t blocks = std::min<std::int64_t>(team, extent / kMinBlock);
  if (blocks <= 1) return product(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  // Block edges on multiples of kMinBlock floats keep each block's columns aligned.
  const std::int64_t step = ((extent + kMinBlock - 1) / kMinBlock + blocks - 1) / blocks * kMinBlock;
#pragma omp parallel for num_threads(static_cast<int>(blocks)) schedule(static)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t begin = blk * step, end = std::min(extent, begin + step);
    if (begin >= end) continue;
    if (split_n)
      product(trans_a, trans_b, m, end - begin, k, alpha, a, lda, trans_b == Trans::yes ? b + begin * ldb : b + begin,
              ldb, beta, c + begin, ldc);
    else
      product(trans_a, trans_b, end - begin, n, k, alpha, trans_a == Trans::yes ? a + begin : a + begin * lda, lda, b,
              ldb, beta, c + begin * ldc, ldc);
  }
}

}  // namespace kiln::detail
