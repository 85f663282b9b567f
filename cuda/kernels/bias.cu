// Per-channel bias of conv and linear outputs: y += bias[c] per element; dbias[c] is the sum
// of dy over the channel's n*h*w values, one block per channel, in double like the CPU.
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/launch.cuh"

namespace kiln::cuda {

namespace {

template <class T>
__global__ void bias_forward_kernel(T* y, const T* bias, Dims4 d, std::int64_t count) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(blockDim.x) * gridDim.x)
    y[i] = st<T>(ld(y[i]) + ld(bias[d.channel_of(i)]));
}

template <class T>
__global__ void __launch_bounds__(kThreads) bias_backward_kernel(const T* dy, Dims4 d, T* dbias) {
  __shared__ double shared[kThreads];
  const std::int64_t hw = d.h * d.w, m = d.n * hw;
  for (std::int64_t c = blockIdx.x; c < d.c; c += gridDim.x) {
    double sum = 0.0;
    for (std::int64_t j = threadIdx.x; j < m; j += kThreads) {
      const std::int64_t n = j / hw, s = j % hw;
      sum += ld(dy[d.at(n, c, s / d.w, s % d.w)]);
    }
    shared[threadIdx.x] = sum;
    __syncthreads();
    for (unsigned half = kThreads / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) dbias[c] = st<T>(static_cast<float>(shared[0]));
    __syncthreads();  // shared[0] is read before the next channel overwrites it
  }
}

}  // namespace

void bias_forward(DType t, void* y, const void* bias, const Dims4& dims, cudaStream_t s) {
  const std::int64_t count = dims.count();
  if (count <= 0 || !bias) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    bias_forward_kernel<<<grid_for(count), kThreads, 0, s>>>(static_cast<T*>(y), static_cast<const T*>(bias), dims, count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void bias_backward(DType t, const void* dy, const Dims4& dims, void* dbias, cudaStream_t s) {
  if (dims.c <= 0 || !dbias) return;
  if (dims.count() <= 0) {  // no values: the sum is 0 (all bits zero in every dtype), as the CPU's empty loop gives
    KILN_CUDA_CHECK(cudaMemsetAsync(dbias, 0, static_cast<std::size_t>(dims.c * size_of(t)), s));
    return;
  }
  const unsigned blocks = static_cast<unsigned>(dims.c < 65535 ? dims.c : 65535);
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    bias_backward_kernel<<<blocks, kThreads, 0, s>>>(static_cast<const T*>(dy), dims, static_cast<T*>(dbias));
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
