#pragma once

// The launch shape of kiln's element-wise kernels: blocks of kThreads threads, each thread
// striding over the elements (grid-stride loops), at most 65,535 blocks.
#include <cstdint>

namespace kiln::cuda {

constexpr int kThreads = 256;  // a power of two: block reductions halve it

inline unsigned grid_for(std::int64_t count) {
  const std::int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
}

__device__ inline std::int64_t first_index() { return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline std::int64_t grid_stride() { return static_cast<std::int64_t>(blockDim.x) * gridDim.x; }

}  // namespace kiln::cuda
