// Group normalization, one block per (sample, group) for the output and the input gradient,
// one block per channel for the weight and bias gradients. Statistics are recomputed from x
// where needed (the CUDA entry keeps no state, whose size could not depend on the batch);
// sums in double, reduced in a fixed tree, so results are deterministic.
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/launch.cuh"
#include "math/groupnorm.hpp"

namespace kiln::cuda {

namespace {

struct Stats {
  double mean, invstd;
};

// Mean and inverse standard deviation of group `group` of sample `n`, two passes as the CPU.
template <class T>
__device__ Stats group_stats(const T* x, const math::Groups& g, std::int64_t n, std::int64_t group, float eps,
                             double* shared) {
  double sum = 0.0;
  for (std::int64_t j = threadIdx.x; j < g.size(); j += kThreads) sum += ld(x[g.at(n, group, j)]);
  const double mean = block_sum(sum, shared) / static_cast<double>(g.size());
  double squares = 0.0;
  for (std::int64_t j = threadIdx.x; j < g.size(); j += kThreads) {
    const double d = ld(x[g.at(n, group, j)]) - mean;
    squares += d * d;
  }
  const double var = block_sum(squares, shared) / static_cast<double>(g.size());
  return {mean, math::gn_invstd(var, eps)};
}

template <class T>
__global__ void __launch_bounds__(kThreads) forward_kernel(const T* x, math::Groups g, const float* weight,
                                                           const float* bias, T* y, float eps) {
  __shared__ double shared[kThreads];
  for (std::int64_t ng = blockIdx.x; ng < g.count(); ng += gridDim.x) {
    const std::int64_t n = ng / g.groups, group = ng % g.groups;
    const Stats stats = group_stats(x, g, n, group, eps, shared);
    for (std::int64_t j = threadIdx.x; j < g.size(); j += kThreads) {
      const std::int64_t o = g.at(n, group, j), c = g.channel(group, j);
      y[o] = st<T>(math::gn_forward(ld(x[o]), stats.mean, stats.invstd, weight[c], bias[c]));
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) input_grad_kernel(const T* x, const T* dy, math::Groups g,
                                                              const float* weight, T* dx, bool accumulate, float eps) {
  __shared__ double shared[kThreads];
  for (std::int64_t ng = blockIdx.x; ng < g.count(); ng += gridDim.x) {
    const std::int64_t n = ng / g.groups, group = ng % g.groups;
    const Stats stats = group_stats(x, g, n, group, eps, shared);
    // The CPU's backward reads the statistics its forward saved as floats; so does this.
    const double mean = static_cast<float>(stats.mean), invstd = static_cast<float>(stats.invstd);
    double sum_dyw = 0.0, sum_dyw_xhat = 0.0;
    for (std::int64_t j = threadIdx.x; j < g.size(); j += kThreads) {
      const std::int64_t o = g.at(n, group, j);
      const double dyw = static_cast<double>(ld(dy[o])) * weight[g.channel(group, j)];
      sum_dyw += dyw;
      sum_dyw_xhat += dyw * (ld(x[o]) - mean) * invstd;
    }
    sum_dyw = block_sum(sum_dyw, shared);
    sum_dyw_xhat = block_sum(sum_dyw_xhat, shared);
    const math::GnBackward b = math::gn_backward(mean, invstd, sum_dyw, sum_dyw_xhat, g.size());
    for (std::int64_t j = threadIdx.x; j < g.size(); j += kThreads) {
      const std::int64_t o = g.at(n, group, j);
      put(dx[o], math::gn_grad_input(ld(x[o]), ld(dy[o]), weight[g.channel(group, j)], b), accumulate);
    }
  }
}

// Each channel recomputes its group's statistics for every sample: channels/groups times the
// statistics work of the forward, the price of keeping no state.
template <class T>
__global__ void __launch_bounds__(kThreads) param_grad_kernel(const T* x, const T* dy, math::Groups g,
                                                              float* dweight, float* dbias, float eps) {
  __shared__ double shared[kThreads];
  const math::Dims4& d = g.dims;
  const std::int64_t hw = d.h * d.w;
  for (std::int64_t c = blockIdx.x; c < d.c; c += gridDim.x) {
    const std::int64_t group = c / g.channels();
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (std::int64_t n = 0; n < d.n; ++n) {
      const Stats stats = group_stats(x, g, n, group, eps, shared);
      const double mean = static_cast<float>(stats.mean), invstd = static_cast<float>(stats.invstd);
      for (std::int64_t s = threadIdx.x; s < hw; s += kThreads) {
        const std::int64_t o = d.at(n, c, s / d.w, s % d.w);
        const float grad = ld(dy[o]);
        sum_dy += grad;
        sum_dy_xhat += static_cast<double>(grad) * (ld(x[o]) - mean) * invstd;
      }
    }
    sum_dy = block_sum(sum_dy, shared);
    sum_dy_xhat = block_sum(sum_dy_xhat, shared);
    if (threadIdx.x == 0) {
      if (dweight) dweight[c] = static_cast<float>(sum_dy_xhat);
      if (dbias) dbias[c] = static_cast<float>(sum_dy);
    }
  }
}

}  // namespace

void groupnorm_forward(DType t, const void* x, const Dims4& dims, std::int64_t groups, const float* weight,
                       const float* bias, void* y, float eps, cudaStream_t s) {
  const math::Groups g{dims, groups};
  if (g.count() <= 0 || g.size() <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    forward_kernel<<<blocks_for_items(g.count()), kThreads, 0, s>>>(static_cast<const T*>(x), g, weight, bias,
                                                                    static_cast<T*>(y), eps);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void groupnorm_backward(DType t, const void* x, const void* dy, const Dims4& dims, std::int64_t groups, const float* weight,
                        void* dx, bool accumulate, float* dweight, float* dbias, float eps, cudaStream_t s) {
  const math::Groups g{dims, groups};
  if (dims.c <= 0) return;
  if (dweight || dbias) {
    if (dims.count() <= 0) {  // no values: the parameter gradients are empty sums, 0
      const std::size_t bytes = static_cast<std::size_t>(dims.c) * sizeof(float);
      if (dweight) KILN_CUDA_CHECK(cudaMemsetAsync(dweight, 0, bytes, s));
      if (dbias) KILN_CUDA_CHECK(cudaMemsetAsync(dbias, 0, bytes, s));
    } else {
      with_dtype(t, [&](auto stored) {
        using T = typename decltype(stored)::type;
        param_grad_kernel<<<blocks_for_items(dims.c), kThreads, 0, s>>>(static_cast<const T*>(x), static_cast<const T*>(dy), g,
                                                                        dweight, dbias, eps);
      });
      KILN_CUDA_LAUNCH_CHECK();
    }
  }
  if (!dx || dims.count() <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    input_grad_kernel<<<blocks_for_items(g.count()), kThreads, 0, s>>>(static_cast<const T*>(x), static_cast<const T*>(dy), g,
                                                                       weight, static_cast<T*>(dx), accumulate, eps);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
