#pragma once

#include <cstdint>
#include <vector>

#include "backend/executor.hpp"

namespace kiln::detail {

// PyTorch's default initialization, drawn from the counter RNG keyed by `seed`: conv and
// linear weights and biases uniform in +-1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5)),
// batchnorm scale 1, shift 0, running mean 0, running variance 1; then `init: dirac`
// convolutions get the identity on their first `in` filters (torch.nn.init.dirac_).
void init_params(Executor& executor, std::uint64_t seed);

// Eigenvalues (descending) and unit eigenvectors (rows, in the same order) of a symmetric
// n x n matrix (row-major), by cyclic Jacobi rotations in double.
void symmetric_eigen(std::vector<double> a, int n, std::vector<double>& values, std::vector<double>& vectors);

// airbench's whitening filters for a kh x kw convolution over the first `images` images of
// `data`, normalized by `transform`: the eigendecomposition of the (uncentered) covariance of
// all kh x kw x C patches, filter i = v_i / sqrt(lambda_i + eps) for every eigenvector in
// descending order, followed by their negatives. PyTorch layout [2 C kh kw, C, kh, kw].
std::vector<float> whitening_filters(const Dataset& data, const InputTransform& transform, std::int64_t kh, std::int64_t kw,
                                     std::int64_t images, double eps);

// Sets the weights of every `init: whiten` convolution from the data.
void init_whitening(Executor& executor, const Dataset& data, const InputTransform& transform, std::int64_t images, double eps);

}  // namespace kiln::detail
