#pragma once

// Row-major single-precision GEMM for the CPU kernels: C = alpha * op(A) * op(B) + beta * C
// with op(A) m x k and op(B) k x n. beta = 0 overwrites C, whatever it held.
//
// Products with op(B) = B, alpha = 1 and beta 0 or 1 (all of conv's) run on kiln's own
// AVX-512 or AVX2 kernel where the CPU has one (see gemm.cpp); the rest run on OpenBLAS's
// cblas_sgemm. Every element of C is one sum over k in order, so a result does not depend on
// how C is split among threads.
//
// Threads: this code never sets OpenBLAS's thread count; the executor does. Given
// `threads`, a product is split into blocks of C run by OpenMP, unless it goes to OpenBLAS
// and OpenBLAS has threads of its own, which then run it: two busy pools of threads on the
// same cores slow each other down.
#include <cstdint>

namespace kiln::detail {

enum class Trans : bool { no = false, yes = true };

void gemm(Trans trans_a, Trans trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc, int threads = 1);

// The size of an OpenMP team whose threads each call gemm(..., threads = 1) on their own
// products with op(B) = B, alpha = 1 and beta 0 or 1: `threads`, or 1 where those products
// go to OpenBLAS and OpenBLAS has threads of its own.
int gemm_team(int threads);

// What runs the products kiln's kernels can take: the best the CPU has, unless a test
// chose another with set_gemm_kernel (false, and no change, when the CPU lacks it).
enum class GemmKernel : std::uint8_t { openblas, avx2, avx512 };
GemmKernel gemm_kernel();
bool set_gemm_kernel(GemmKernel kernel);

}  // namespace kiln::detail
