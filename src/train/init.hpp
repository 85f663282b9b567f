#pragma once

#include <cstdint>
#include <vector>

#include "plan/compiled_plan.hpp"
#include "plan/init.hpp"

namespace kiln::detail {

// Eigenvalues (descending) and unit eigenvectors (rows, in the same order) of a symmetric
// n x n matrix (row-major), by cyclic Jacobi rotations in double.
void symmetric_eigen(std::vector<double> a, int n, std::vector<double>& values, std::vector<double>& vectors);

// airbench's whitening filters for a kh x kw convolution over the first `images` images of
// `data`, normalized by `transform`: the eigendecomposition of the (uncentered) covariance of
// all kh x kw x C patches, filter i = v_i / sqrt(lambda_i + eps) for every eigenvector in
// descending order, followed by their negatives. PyTorch layout [2 C kh kw, C, kh, kw].
std::vector<float> whitening_filters(const Dataset& data, const InputTransform& transform, std::int64_t kh, std::int64_t kw,
                                     std::int64_t images, double eps);

// Sets the weights of every `init: whiten` convolution from the data, normalized as the
// plan's training input.
void init_whitening(CompiledPlan& plan, const Dataset& data, std::int64_t images, double eps);

}  // namespace kiln::detail
