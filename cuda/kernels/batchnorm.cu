// Batch normalization, one block per channel: the block sums the channel's n*h*w values in
// double (two passes, mean then squared deviations, as the CPU kernel does), then applies
// math/batchnorm.hpp's per-channel arithmetic to every value. Sums are reduced in a fixed
// tree, so results are deterministic, though not bitwise the CPU's (its order differs).
// A null weight or bias reads as 1 or 0 (the values a fixed one holds).
//
// batchnorm + activation runs the same two kernels: forward passes the normalized value
// through the activation before it stores it, and backward's sums and dx read dy through the
// activation's gradient instead of dy, both computed as the unfused kernels round them, so
// the fused pair is bitwise the unfused one.
#include <cstdint>
#include <type_traits>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/activation.cuh"
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

__device__ float weight_of(const float* weight, std::int64_t c) { return weight ? weight[c] : 1.0f; }
__device__ float bias_of(const float* bias, std::int64_t c) { return bias ? bias[c] : 0.0f; }

// The affine evaluation's forward applies: the running statistics, the inverse standard
// deviation in double (forward_kernel computes it inline, from the same expressions).
__device__ math::BnAffine running_affine(const float* running_mean, const float* running_var, const float* weight,
                                         const float* bias, float eps, std::int64_t c) {
  return math::bn_affine(running_mean[c], math::bn_invstd(running_var[c], eps), weight_of(weight, c), bias_of(bias, c));
}

// The normalized value as stored: one fused multiply-add rounded to T, written once so that
// the fused backward recomputes forward's value bit for bit.
template <class T>
__device__ T normalized(float x, const math::BnAffine& f) {
  return st<T>(__fmaf_rn(x, f.alpha, f.beta));
}

// v as the unfused kernels store it and read it back: rounded to T. In fp32 rounding is the
// identity, and with no store between them ptxas may fuse the multiply that produced v into
// the operation that reads it (an activation gradient's dy * k into batchnorm's
// dy - (x - mean) * proj, which the unfused kernel fuses the other way); __fmul_rn(v, 1) is
// exact and never merged.
template <class T>
__device__ float as_stored(float v) {
  return ld(st<T>(v));
}
template <>
__device__ float as_stored<float>(float v) {
  return __fmul_rn(v, 1.0f);
}

// What forward stores of the normalized value z: z (batchnorm alone), or act(z).
struct Normalized {
  template <class T>
  __device__ T operator()(T z) const {
    return z;
  }
};
template <class Act>
struct Activated {
  Act act;
  template <class T>
  __device__ T operator()(T z) const {
    return st<T>(act.fwd(ld(z)));
  }
};

template <class T, class Out>
__global__ void __launch_bounds__(kThreads) forward_kernel(Out out, bool train, const T* x, Dims4 d, T* y,
                                                           const float* weight, const float* bias, float* running_mean,
                                                           float* running_var, float* save_mean, float* save_invstd,
                                                           float* save_alpha_beta, float momentum, float eps) {
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
      invstd = math::bn_invstd(running_var[c], eps);  // as running_affine recomputes it
    }
    const math::BnAffine f = math::bn_affine(mean, invstd, weight_of(weight, c), bias_of(bias, c));
    if (threadIdx.x == 0) {
      if (save_mean) save_mean[c] = static_cast<float>(mean);
      if (save_invstd) save_invstd[c] = static_cast<float>(invstd);
      if (save_alpha_beta) {
        save_alpha_beta[c] = f.alpha;
        save_alpha_beta[d.c + c] = f.beta;
      }
    }
    if (!y) continue;  // the statistics and the affine only (a cuDNN prologue applies it)
    for (std::int64_t j = threadIdx.x; j < m; j += kThreads) {
      const std::int64_t o = channel_value(d, c, j);
      y[o] = out(normalized<T>(ld(x[o]), f));
    }
  }
}

// The gradient backward reads for value o of channel c (x: that value's input): dy as stored
// (batchnorm alone), or dy through the activation at the recomputed normalized value, rounded
// to T as activation_backward stores it. channel(c) gives the reader of channel c.
template <class T>
struct Incoming {
  const T* dy;
  __device__ Incoming channel(std::int64_t) const { return *this; }
  __device__ float operator()(std::int64_t o, float) const { return ld(dy[o]); }
};

template <class T, class Act>
struct ActivationGrad {
  Act act;
  const T* dy;
  math::BnAffine f;  // the affine forward applied to this channel
  __device__ float operator()(std::int64_t o, float x) const {
    const float z = ld(normalized<T>(x, f));
    const float saved = Act::kSavesOutput ? as_stored<T>(act.fwd(z)) : z;
    return as_stored<T>(act.bwd(saved, ld(dy[o])));
  }
};

// Training reads the affine forward saved (save_alpha_beta: c scales, then c shifts);
// evaluation recomputes it from the running statistics, as forward did.
template <class T, class Act>
struct ThroughActivation {
  Act act;
  const T* dy;
  bool train;
  const float* save_alpha_beta;
  std::int64_t channels;
  const float* running_mean;
  const float* running_var;
  const float* weight;
  const float* bias;
  float eps;
  __device__ ActivationGrad<T, Act> channel(std::int64_t c) const {
    const math::BnAffine f = train ? math::BnAffine{save_alpha_beta[c], save_alpha_beta[channels + c]}
                                   : running_affine(running_mean, running_var, weight, bias, eps, c);
    return {act, dy, f};
  }
};

// Training: the batch statistics forward saved; evaluation: the running ones, the inverse
// standard deviation rounded to float as the CPU's forward state holds it, and the
// statistics are constants (dx = dy * weight * invstd).
template <class T, class Grad>
__global__ void __launch_bounds__(kThreads) backward_kernel(bool train, const T* x, Grad grad, Dims4 d, T* dx,
                                                            bool accumulate, const float* weight, float* dweight,
                                                            float* dbias, const float* save_mean,
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
    const auto dy_of = grad.channel(c);
    double sum_dy = 0.0, sum_dy_xmu = 0.0;
    for (std::int64_t j = threadIdx.x; j < m; j += kThreads) {
      const std::int64_t o = channel_value(d, c, j);
      const float xo = ld(x[o]);
      const float g = dy_of(o, xo);
      sum_dy += g;
      sum_dy_xmu += static_cast<double>(g) * (xo - mean);
    }
    sum_dy = block_sum(sum_dy, shared);
    sum_dy_xmu = block_sum(sum_dy_xmu, shared);
    if (threadIdx.x == 0) {
      if (dweight) dweight[c] = static_cast<float>(sum_dy_xmu * invstd);
      if (dbias) dbias[c] = static_cast<float>(sum_dy);
    }
    if (!dx) continue;
    math::BnBackward b = math::bn_backward(mean, invstd, weight_of(weight, c), sum_dy, sum_dy_xmu, m);
    if (!train) b.proj = 0.0f, b.mean_dy = 0.0f;
    for (std::int64_t j = threadIdx.x; j < m; j += kThreads) {
      const std::int64_t o = channel_value(d, c, j);
      const float xo = ld(x[o]);
      put(dx[o], math::bn_grad_input(xo, dy_of(o, xo), b), accumulate);
    }
  }
}

template <class Out>
void launch_forward(DType t, Out out, bool train, const void* x, const Dims4& dims, void* y, const float* weight,
                    const float* bias, float* running_mean, float* running_var, float* save_mean, float* save_invstd,
                    float* save_alpha_beta, float momentum, float eps, cudaStream_t s) {
  if (dims.c <= 0 || dims.count() <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    forward_kernel<<<blocks_for_items(dims.c), kThreads, 0, s>>>(out, train, static_cast<const T*>(x), dims,
                                                                 static_cast<T*>(y), weight, bias, running_mean,
                                                                 running_var, save_mean, save_invstd, save_alpha_beta,
                                                                 momentum, eps);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

// grad_for(dy as const T*) builds the kernel's Grad.
template <class GradFor>
void launch_backward(DType t, GradFor grad_for, bool train, const void* x, const void* dy, const Dims4& dims, void* dx,
                     bool accumulate, const float* weight, float* dweight, float* dbias, const float* save_mean,
                     const float* save_invstd, const float* running_mean, const float* running_var, float eps,
                     cudaStream_t s) {
  if (dims.c <= 0 || (!dx && !dweight && !dbias)) return;
  if (dims.count() <= 0) {  // no values: the parameter gradients are empty sums, 0
    const std::size_t bytes = static_cast<std::size_t>(dims.c) * sizeof(float);
    if (dweight) KILN_CUDA_CHECK(cudaMemsetAsync(dweight, 0, bytes, s));
    if (dbias) KILN_CUDA_CHECK(cudaMemsetAsync(dbias, 0, bytes, s));
    return;
  }
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    backward_kernel<<<blocks_for_items(dims.c), kThreads, 0, s>>>(train, static_cast<const T*>(x),
                                                                  grad_for(static_cast<const T*>(dy)), dims,
                                                                  static_cast<T*>(dx), accumulate, weight, dweight, dbias,
                                                                  save_mean, save_invstd, running_mean, running_var, eps);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace

void batchnorm_forward(DType t, bool train, const void* x, const Dims4& dims, void* y, const float* weight, const float* bias,
                       float* running_mean, float* running_var, float* save_mean, float* save_invstd, float momentum, float eps,
                       cudaStream_t s) {
  launch_forward(t, Normalized{}, train, x, dims, y, weight, bias, running_mean, running_var, save_mean, save_invstd, nullptr,
                 momentum, eps, s);
}

void batchnorm_backward(DType t, bool train, const void* x, const void* dy, const Dims4& dims, void* dx, bool accumulate,
                        const float* weight, float* dweight, float* dbias, const float* save_mean, const float* save_invstd,
                        const float* running_mean, const float* running_var, float eps, cudaStream_t s) {
  auto incoming = [](const auto* stored_dy) { return Incoming<std::remove_cvref_t<decltype(*stored_dy)>>{stored_dy}; };
  launch_backward(t, incoming, train, x, dy, dims, dx, accumulate, weight, dweight, dbias, save_mean, save_invstd,
                  running_mean, running_var, eps, s);
}

void batchnorm_act_forward(DType t, bool train, OpKind act, float slope, const void* x, const Dims4& dims, void* y,
                           const float* weight, const float* bias, float* running_mean, float* running_var,
                           float* save_mean, float* save_invstd, float* save_alpha_beta, float momentum, float eps,
                           cudaStream_t s) {
  with_activation("batchnorm_act_forward", act, slope, [&](auto f) {
    launch_forward(t, Activated<decltype(f)>{f}, train, x, dims, y, weight, bias, running_mean, running_var, save_mean,
                   save_invstd, save_alpha_beta, momentum, eps, s);
  });
}

void batchnorm_act_backward(DType t, bool train, OpKind act, float slope, const void* x, const void* dy, const Dims4& dims,
                            void* dx, bool accumulate, const float* weight, const float* bias, float* dweight, float* dbias,
                            const float* save_mean, const float* save_invstd, const float* save_alpha_beta,
                            const float* running_mean, const float* running_var, float eps, cudaStream_t s) {
  with_activation("batchnorm_act_backward", act, slope, [&](auto f) {
    auto through = [&](const auto* stored_dy) {
      using T = std::remove_cvref_t<decltype(*stored_dy)>;
      return ThroughActivation<T, decltype(f)>{.act = f,
                                               .dy = stored_dy,
                                               .train = train,
                                               .save_alpha_beta = save_alpha_beta,
                                               .channels = dims.c,
                                               .running_mean = running_mean,
                                               .running_var = running_var,
                                               .weight = weight,
                                               .bias = bias,
                                               .eps = eps};
    };
    launch_backward(t, through, train, x, dy, dims, dx, accumulate, weight, dweight, dbias, save_mean, save_invstd,
                    running_mean, running_var, eps, s);
  });
}

}  // namespace kiln::cuda
