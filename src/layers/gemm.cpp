#include "layers/gemm.hpp"

#include <cblas.h>

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

// Blocks narrower than this run worse than fewer, wider ones.
constexpr std::int64_t kMinBlock = 16;

}  // namespace

int gemm_team(int threads) { return openblas_get_num_threads() > 1 ? 1 : std::max(1, threads); }

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
  const std::int64_t blocks = std::min<std::int64_t>(threads, extent / kMinBlock);
  if (blocks <= 1 || gemm_team(threads) == 1) {
    sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Block edges on multiples of kMinBlock floats keep each block's columns aligned.
  const std::int64_t step = (extent / kMinBlock + blocks - 1) / blocks * kMinBlock;
#pragma omp parallel for num_threads(static_cast<int>(blocks)) schedule(static)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t begin = blk * step, end = std::min(extent, begin + step);
    if (begin >= end) continue;
    if (split_n)
      sgemm(trans_a, trans_b, m, end - begin, k, alpha, a, lda, trans_b == Trans::yes ? b + begin * ldb : b + begin, ldb,
            beta, c + begin, ldc);
    else
      sgemm(trans_a, trans_b, end - begin, n, k, alpha, trans_a == Trans::yes ? a + begin : a + begin * lda, lda, b, ldb,
            beta, c + begin * ldc, ldc);
  }
}

}  // namespace kiln::detail
