#pragma once

// The launch shape of kiln's element-wise kernels: blocks of kThreads threads, each thread
// striding over the elements (grid-stride loops), at most 65,535 blocks.
#include <cstdint>

#include "cuda/kernels/storage.cuh"

namespace kiln::cuda {

constexpr int kThreads = 256;  // a power of two: block reductions halve it

inline unsigned grid_for(std::int64_t count) {
  const std::int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
}

__device__ inline std::int64_t first_index() { return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline std::int64_t grid_stride() { return static_cast<std::int64_t>(blockDim.x) * gridDim.x; }

// Sum of every thread's `v` over a block of kThreads threads, returned to every thread, in a
// fixed tree (deterministic). `shared` holds kThreads doubles; it is free again on return.
__device__ inline double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (unsigned half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();
  return total;
}

// Blocks for one block per item (a channel, a group), at most 65,535: kernels loop over the rest.
inline unsigned blocks_for_items(std::int64_t items) { return static_cast<unsigned>(items < 65535 ? items : 65535); }

}  // namespace kiln::cuda
