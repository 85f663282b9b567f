#include "layers/gemm.hpp"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>

namespace kiln::detail {

namespace {

void sgemm(Trans trans_a, Trans trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
           std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  auto op = [](Trans t) { return t == Trans::yes ? CblasTrans : CblasNoTrans; };
  cblas_sgemm(CblasRowMajor, op(trans_a), op(trans_b), static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

// ---- kiln's own kernel: C (+)= A * B, B row-major, on AVX-512 ---------------------------
//
// The convolutions' products are thin (M = 32..64 channels, K = 75..800, N = one sample's
// pixels): OpenBLAS reaches ~65-90 GFLOP/s a core on them (Zen 4), spending much of its
// time packing. This kernel packs nothing. A tile of 8 rows x 32 columns of C lives in 16
// registers; each step of k loads two vectors of a row of B and broadcasts 8 elements of A,
// read through strides, so A may be W, W^T or a column matrix as it lies in memory. It
// reaches ~105-115 GFLOP/s a core on the same shapes. Every element of C is one sum over k
// in order, so results do not depend on how C is tiled or split among threads.

constexpr std::int64_t kRows = 8, kCols = 32;

bool cpu_has_avx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();  // this runs during static initialization, maybe before libgcc's
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

bool g_own_kernel = cpu_has_avx512();

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KILN_AVX512 __attribute__((target("avx512f")))

// One tile: R rows (R <= 8) of A against the columns of B that masks m0 and m1 select.
template <int R>
KILN_AVX512 void tile(std::int64_t k, const float* a, std::int64_t a_row, std::int64_t a_col, const float* b,
                      std::int64_t ldb, float* c, std::int64_t ldc, __mmask16 m0, __mmask16 m1, bool accumulate) {
  __m512 lo[R], hi[R];
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm512_setzero_ps();
  for (std::int64_t kk = 0; kk < k; ++kk) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, b + kk * ldb);
    const __m512 b1 = _mm512_maskz_loadu_ps(m1, b + kk * ldb + 16);
    const float* ak = a + kk * a_col;
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(ak[r * a_row]);
      lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
      hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
    }
  }
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
KILN_AVX512 void row_block(std::int64_t n, std::int64_t k, const float* a, std::int64_t a_row, std::int64_t a_col,
                           const float* b, std::int64_t ldb, float* c, std::int64_t ldc, bool accumulate) {
  for (std::int64_t j = 0; j < n; j += kCols) {
    const std::int64_t w = std::min(kCols, n - j);
    const auto m0 = static_cast<__mmask16>(w >= 16 ? 0xFFFF : (1u << w) - 1);
    const auto m1 = static_cast<__mmask16>(w >= 32 ? 0xFFFF : w > 16 ? (1u << (w - 16)) - 1 : 0);
    tile<R>(k, a, a_row, a_col, b + j, ldb, c + j, ldc, m0, m1, accumulate);
  }
}

// C (m x n) (+)= A (m x k, element (i, kk) at a[i * a_row + kk * a_col]) * B (k x n).
KILN_AVX512 void own_gemm(std::int64_t m, std::int64_t n, std::int64_t k, const float* a, std::int64_t a_row,
                          std::int64_t a_col, const float* b, std::int64_t ldb, float* c, std::int64_t ldc,
                          bool accumulate) {
  std::int64_t i = 0;
  for (; i + kRows <= m; i += kRows)
    row_block<kRows>(n, k, a + i * a_row, a_row, a_col, b, ldb, c + i * ldc, ldc, accumulate);
  const float* ai = a + i * a_row;
  float* ci = c + i * ldc;
  switch (m - i) {
    case 1: return row_block<1>(n, k, ai, a_row, a_col, b, ldb, ci, ldc, accumulate);
    case 2: return row_block<2>(n, k, ai, a_row, a_col, b, ldb, ci, ldc, accumulate);
    case 3: return row_block<3>(n, k, ai, a_row, a_col, b, ldb, ci, ldc, accumulate);
    case 4: return row_block<4>(n, k, ai, a_row, a_col, b, ldb, ci, ldc, accumulate);
    case 5: return row_block<5>(n, k, ai, a_row, a_col, b, ldb, ci, ldc, accumulate);
    case 6: return row_block<6>(n, k, ai, a_row, a_col, b, ldb, ci, ldc, accumulate);
    case 7: return row_block<7>(n, k, ai, a_row, a_col, b, ldb, ci, ldc, accumulate);
    default: return;
  }
}
#undef KILN_AVX512
#else
void own_gemm(std::int64_t, std::int64_t, std::int64_t, const float*, std::int64_t, std::int64_t, const float*,
              std::int64_t, float*, std::int64_t, bool) {}
#endif

// Whether kiln's kernel takes this product.
bool own(Trans trans_b, float alpha, float beta) {
  return g_own_kernel && trans_b == Trans::no && alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
}

void product(Trans trans_a, Trans trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
             std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  if (!own(trans_b, alpha, beta)) return sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (trans_a == Trans::yes)
    own_gemm(m, n, k, a, 1, lda, b, ldb, c, ldc, beta == 1.0f);
  else
    own_gemm(m, n, k, a, lda, 1, b, ldb, c, ldc, beta == 1.0f);
}

// Blocks narrower than this run worse than fewer, wider ones.
constexpr std::int64_t kMinBlock = 16;

}  // namespace

void use_own_gemm_kernel(bool on) { g_own_kernel = on && cpu_has_avx512(); }

int gemm_team(int threads) { return g_own_kernel || openblas_get_num_threads() == 1 ? std::max(1, threads) : 1; }

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
  const int team = own(trans_b, alpha, beta) ? std::max(1, threads) : gemm_team(threads);
  const std::int64_t blocks = std::min<std::int64_t>(team, extent / kMinBlock);
  if (blocks <= 1) return product(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  // Block edges on multiples of kMinBlock floats keep each block's columns aligned.
  const std::int64_t step = ((extent + kMinBlock - 1) / kMinBlock + blocks - 1) / blocks * kMinBlock;
#pragma omp parallel for num_threads(static_cast <int>(blocks)) schedule(static)
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
