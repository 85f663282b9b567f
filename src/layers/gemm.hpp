#pragma once

// Row-major single-precision GEMM for the CPU kernels, over OpenBLAS's cblas_sgemm:
// C = alpha * op(A) * op(B) + beta * C with op(A) m x k and op(B) k x n. beta = 0 overwrites
// C, whatever it held.
//
// Who runs it in parallel depends on how the executor set OpenBLAS up (this code never sets
// OpenBLAS's thread count): when OpenBLAS has several threads of its own, one call uses
// them; when it has one, the product is split into `threads` blocks of C run by OpenMP, so
// that the kernels' OpenMP loops and the GEMMs share one pool of threads instead of two
// pools spinning against each other. Either way every element of C is computed by one
// call over the whole k, so the result does not depend on the split.
#include <cstdint>

namespace kiln::detail {

enum class Trans : bool { no = false, yes = true };

void gemm(Trans trans_a, Trans trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc, int threads = 1);

// The size of an OpenMP team whose threads each call gemm(..., threads = 1) on their own
// block: `threads` when OpenBLAS runs single-threaded, else 1 (and OpenBLAS's threads run
// each GEMM).
int gemm_team(int threads);

}  // namespace kiln::detail
