// Batch normalization, one block per channel: the block sums the channel's n*h*w values in
// double (two passes, mean then squared deviations, as the CPU kernel does), then applies
// math/batchnorm.hpp's per-channel arithmetic to every value. Sums are reduced in a fixed
// tree, so results are deterministic, though not bitwise the CPU's (its order differs).
// A null weight or bias reads as 1 or 0 (the values a fixed one holds).
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/launch.cuh"
#include "math/batchnorm.hpp"

namespace kiln::cuda {

namespace {

// Offset of value j (0 <= j < n*h*w, in (n, h, w) order) of channel c.
__device__ std::int64_t channel_value(const Dims4& d, std::int64_t c, std::int64_t j) {
  const std::int64_t hw = d.h * d.w;
  const std::int64_t n = j / hw, s = j % hw;
  return d.at(n, c, s / d.w, s % d.w);
}

template <class T>
__global__ void __launch_bounds__(kThreads) forward_kernel(bool train, const T* x, Dims4 d, T* y,
                                                           const float* weight, const float* bias, float* running_mean,
                                                           float* running_var, float* save_mean, float* save_invstd,
                                                           float momentum, float eps) {
  __shared__ double shared[kThreads];
  const std::int64_t m = d.n * d.h * d.w;
  for (std::int64_t c = blockIdx.x; c < d.c; c += gridDim.x) {
    double mean = 0.0, invstd = 0.0;
    if (train) {
      double sum = 0.0;
      for (std::int64_t j = threadIdx.x; j < m; j += kThreads) sum += ld(x[channel_value(d, c, j)]);
      mean = block_sum(sum, shared) / static_cast<double>(m);
      double squares = 0.0;
      for (std::int64_t j = threadIdx.x; j < m; j += kThreads) {
        const double dev = ld(x[channel_value(d, c, j)]) - mean;
        squares += dev * dev;
      }
      const double var = block_sum(squares, shared) / static_cast<double>(m);
      invstd = math::bn_invstd(var, eps);
      if (threadIdx.x == 0) {
        running_mean[c] = static_cast<float>(math::bn_running(running_mean[c], mean, momentum));
        running_var[c] = static_cast<float>(math::bn_running(running_var[c], math::bn_unbiased(var, m), momentum));
      }
    } else {
      mean = running_mean[c];
      invstd = math::bn_invstd(running_var[c], eps);
    }
    if (threadIdx.x == 0) {
      if (save_mean) save_mean[c] = static_cast<float>(mean);
      if (save_invstd) save_invstd[c] = static_cast<float>(invstd);
    }
    const math::BnAffine f = math::bn_affine(mean, invstd, weight ? weight[c] : 1.0f, bias ? bias[c] : 0.0f);
    for (std::int64_t j = threadIdx.x; j < m; j += kThreads) {
      const std::int64_t o = channel_value(d, c, j);
      y[o] = st<T>(ld(x[o]) * f.alpha + f.beta);
    }
  }
}

// Training: the batch statistics forward saved; evaluation: the running ones, the inverse
// standard deviation rounded to float as the CPU's forward state holds it, and the
// statistics are constants (dx = dy * weight * invstd).
template <class T>
__global__ void __launch_bounds__(kThreads) backward_kernel(bool train, const T* x, const T* dy, Dims4 d, T* dx, bool accumulate, const float* weight,
                                                            float* dweight, float* dbias, const float* save_mean,
                                                            const float* save_invstd, const float* running_mean,
                                                            const float* running_var, float eps) {
  __shared__ double shared[kThreads];
  const std::int64_t m = d.n * d.h * d.w;
  for (std::int64_t c = blockIdx.x; c < d.c; c += gridDim.x) {
    double mean = 0.0, invstd = 0.0;
    if (train) {
      mean = save_mean[c];
      invstd = save_invstd[c];
    } else {
      mean = running_mean[c];
      invstd = static_cast<float>(math::bn_invstd(running_var[c], eps));
    }
    double sum_dy = 0.0, sum_dy_xmu = 0.0;
    for (std::int64_t j = threadIdx.x; j < m; j += kThreads) {
      const std::int64_t o = channel_value(d, c, j);
      const float g = ld(dy[o]);
      sum_dy += g;
      sum_dy_xmu += static_cast<double>(g) * (ld(x[o]) - mean);
    }
    sum_dy = block_sum(sum_dy, shared);
    sum_dy_xmu = block_sum(sum_dy_xmu, shared);
    if (threadIdx.x == 0) {
      if (dweight) dweight[c] = static_cast<float>(sum_dy_xmu * invstd);
      if (dbias) dbias[c] = static_cast<float>(sum_dy);
    }
    if (!dx) continue;
    math::BnBackward b = math::bn_backward(mean, invstd, weight ? weight[c] : 1.0f, sum_dy, sum_dy_xmu, m);
    if (!train) b.proj = 0.0f, b.mean_dy = 0.0f;
    for (std::int64_t j = threadIdx.x; j < m; j += kThreads) {
      const std::int64_t o = channel_value(d, c, j);
      put(dx[o], math::bn_grad_input(ld(x[o]), ld(dy[o]), b), accumulate);
    }
  }
}

}  // namespace

void batchnorm_forward(DType t, bool train, const void* x, const Dims4& dims, void* y, const float* weight, const float* bias,
                       float* running_mean, float* running_var, float* save_mean, float* save_invstd, float momentum, float eps,
                       cudaStream_t s) {
  if (dims.c <= 0 || dims.count() <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    forward_kernel<<<blocks_for_items(dims.c), kThreads, 0, s>>>(train, static_cast<const T*>(x), dims, static_cast<T*>(y),
                                                                 weight, bias, running_mean, running_var, save_mean,
                                                                 save_invstd, momentum, eps);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void batchnorm_backward(DType t, bool train, const void* x, const void* dy, const Dims4& dims, void* dx, bool accumulate,
                        const float* weight, float* dweight, float* dbias, const float* save_mean, const float* save_invstd,
                        const float* running_mean, const float* running_var, float eps, cudaStream_t s) {
  if (dims.c <= 0 || (!dx && !dweight && !dbias)) return;
  if (dims.count() <= 0) {  // no values: the parameter gradients are empty sums, 0
    const std::size_t bytes = static_cast<std::size_t>(dims.c) * sizeof(float);
    if (dweight) KILN_CUDA_CHECK(cudaMemsetAsync(dweight, 0, bytes, s));
    if (dbias) KILN_CUDA_CHECK(cudaMemsetAsync(dbias, 0, bytes, s));
    return;
  }
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    backward_kernel<<<blocks_for_items(dims.c), kThreads, 0, s>>>(train, static_cast<const T*>(x), static_cast<const T*>(dy),
                                                                  dims, static_cast<T*>(dx), accumulate, weight, dweight, dbias,
                                                                  save_mean, save_invstd, running_mean, running_var, eps);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
