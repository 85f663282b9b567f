#pragma once

#include <cstdint>

#include "backend/executor.hpp"

namespace kiln::detail {

// PyTorch's default initialization, drawn from the counter RNG keyed by `seed`: conv and
// linear weights and biases uniform in +-1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5)),
// batchnorm scale 1, shift 0, running mean 0, running variance 1; an op whose OpDef has an
// initial_value starts at it (groupnorm: weight 1, bias 0); then `init: dirac`
// convolutions get the identity on their first `in` filters (torch.nn.init.dirac_).
void init_params(Executor& executor, std::uint64_t seed);

}  // namespace kiln::detail
