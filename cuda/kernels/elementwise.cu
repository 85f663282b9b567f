// Element-wise kernels: activations, scale, dropout, copy/add, fill. One thread per element
// in a grid-stride loop; each element reads and writes only its own index, so y == x (in
// place) is safe. The per-element math is math/activation.hpp's and math/dropout.hpp's.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/launch.cuh"
#include "math/activation.hpp"
#include "math/dropout.hpp"
#include "math/layout.hpp"

namespace kiln::cuda {

namespace {

// ---- activations: fwd(x) and bwd(saved, dy), saved being y or x as backward_needs says -----

struct Relu {
  __device__ float fwd(float x) const { return math::relu_fwd(x); }
  __device__ float bwd(float y, float dy) const { return math::relu_bwd(y, dy); }
};
struct LeakyRelu {
  float slope;
  __device__ float fwd(float x) const { return math::leaky_relu_fwd(x, slope); }
  __device__ float bwd(float x, float dy) const { return math::leaky_relu_bwd(x, dy, slope); }
};
struct Gelu {
  __device__ float fwd(float x) const { return math::gelu_fwd(x); }
  __device__ float bwd(float x, float dy) const { return math::gelu_bwd(x, dy); }
};
struct Silu {
  __device__ float fwd(float x) const { return math::silu_fwd(x); }
  __device__ float bwd(float x, float dy) const { return math::silu_bwd(x, dy); }
};
struct Sigmoid {
  __device__ float fwd(float x) const { return math::sigmoid_fwd(x); }
  __device__ float bwd(float y, float dy) const { return math::sigmoid_bwd(y, dy); }
};
struct Tanh {
  __device__ float fwd(float x) const { return math::tanh_fwd(x); }
  __device__ float bwd(float y, float dy) const { return math::tanh_bwd(y, dy); }
};

template <class F>
__global__ void activation_forward_kernel(F f, const float* x, float* y, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) y[i] = f.fwd(x[i]);
}

template <class F>
__global__ void activation_backward_kernel(F f, const float* saved, const float* dy, float* dx, bool accumulate,
                                           std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const float v = f.bwd(saved[i], dy[i]);
    dx[i] = accumulate ? dx[i] + v : v;
  }
}

template <class F>
void launch_forward(F f, const float* x, float* y, std::int64_t count, cudaStream_t s) {
  activation_forward_kernel<<<grid_for(count), kThreads, 0, s>>>(f, x, y, count);
  KILN_CUDA_LAUNCH_CHECK();
}

template <class F>
void launch_backward(F f, const float* saved, const float* dy, float* dx, bool accumulate, std::int64_t count,
                     cudaStream_t s) {
  activation_backward_kernel<<<grid_for(count), kThreads, 0, s>>>(f, saved, dy, dx, accumulate, count);
  KILN_CUDA_LAUNCH_CHECK();
}

[[noreturn]] void not_an_activation(const char* launcher, OpKind op) {
  throw std::invalid_argument(std::string(launcher) + ": '" + std::string(op_name(op)) + "' is not an activation");
}

// ---- the rest -------------------------------------------------------------------------

__global__ void scale_kernel(float factor, const float* in, float* out, bool accumulate, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const float v = factor * in[i];
    out[i] = accumulate ? out[i] + v : v;
  }
}

__global__ void dropout_kernel(float p, float scale, std::uint64_t key, const float* in, float* out, bool accumulate,
                               math::Dims4 d) {
  const std::int64_t count = d.count();
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const auto j = static_cast<std::uint64_t>(math::logical_index(d, i));
    const float v = in[i] * math::dropout_multiplier(key, j, p, scale);
    out[i] = accumulate ? out[i] + v : v;
  }
}

__global__ void copy_or_add_kernel(const float* src, float* dst, bool accumulate, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) dst[i] = accumulate ? dst[i] + src[i] : src[i];
}

__global__ void add2_kernel(const float* a, const float* b, float* y, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) y[i] = a[i] + b[i];
}

__global__ void fill_kernel(float* p, float value, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) p[i] = value;
}

// The CPU computes 1 / (1 - p) in double from the spec's p and rounds it once; so does this.
float dropout_scale(float p) { return static_cast<float>(1.0 / (1.0 - static_cast<double>(p))); }

}  // namespace

void activation_forward(OpKind op, float slope, const float* x, float* y, std::int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  switch (op) {
    case OpKind::relu: return launch_forward(Relu{}, x, y, count, s);
    case OpKind::leaky_relu: return launch_forward(LeakyRelu{slope}, x, y, count, s);
    case OpKind::gelu: return launch_forward(Gelu{}, x, y, count, s);
    case OpKind::silu: return launch_forward(Silu{}, x, y, count, s);
    case OpKind::sigmoid: return launch_forward(Sigmoid{}, x, y, count, s);
    case OpKind::tanh: return launch_forward(Tanh{}, x, y, count, s);
    default: not_an_activation("activation_forward", op);
  }
}

void activation_backward(OpKind op, float slope, const float* saved, const float* dy, float* dx, bool accumulate,
                         std::int64_t count, cudaStream_t s) {
  if (count <= 0 || !dx) return;
  switch (op) {
    case OpKind::relu: return launch_backward(Relu{}, saved, dy, dx, accumulate, count, s);
    case OpKind::leaky_relu: return launch_backward(LeakyRelu{slope}, saved, dy, dx, accumulate, count, s);
    case OpKind::gelu: return launch_backward(Gelu{}, saved, dy, dx, accumulate, count, s);
    case OpKind::silu: return launch_backward(Silu{}, saved, dy, dx, accumulate, count, s);
    case OpKind::sigmoid: return launch_backward(Sigmoid{}, saved, dy, dx, accumulate, count, s);
    case OpKind::tanh: return launch_backward(Tanh{}, saved, dy, dx, accumulate, count, s);
    default: not_an_activation("activation_backward", op);
  }
}

void scale_forward(float factor, const float* x, float* y, std::int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  scale_kernel<<<grid_for(count), kThreads, 0, s>>>(factor, x, y, false, count);
  KILN_CUDA_LAUNCH_CHECK();
}

void scale_backward(float factor, const float* dy, float* dx, bool accumulate, std::int64_t count, cudaStream_t s) {
  if (count <= 0 || !dx) return;
  scale_kernel<<<grid_for(count), kThreads, 0, s>>>(factor, dy, dx, accumulate, count);
  KILN_CUDA_LAUNCH_CHECK();
}

void dropout_forward(float p, std::uint64_t key, const float* x, float* y, const Dims4& d, cudaStream_t s) {
  const std::int64_t count = d.count();
  if (count <= 0) return;
  dropout_kernel<<<grid_for(count), kThreads, 0, s>>>(p, dropout_scale(p), key, x, y, false, d);
  KILN_CUDA_LAUNCH_CHECK();
}

void dropout_backward(float p, std::uint64_t key, const float* dy, float* dx, bool accumulate, const Dims4& d,
                      cudaStream_t s) {
  const std::int64_t count = d.count();
  if (count <= 0 || !dx) return;
  dropout_kernel<<<grid_for(count), kThreads, 0, s>>>(p, dropout_scale(p), key, dy, dx, accumulate, d);
  KILN_CUDA_LAUNCH_CHECK();
}

void copy_or_add(const float* src, float* dst, bool accumulate, std::int64_t count, cudaStream_t s) {
  if (count <= 0 || !dst || (dst == src && !accumulate)) return;
  copy_or_add_kernel<<<grid_for(count), kThreads, 0, s>>>(src, dst, accumulate, count);
  KILN_CUDA_LAUNCH_CHECK();
}

void add2(const float* a, const float* b, float* y, std::int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  add2_kernel<<<grid_for(count), kThreads, 0, s>>>(a, b, y, count);
  KILN_CUDA_LAUNCH_CHECK();
}

void fill(float* p, float value, std::int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  fill_kernel<<<grid_for(count), kThreads, 0, s>>>(p, value, count);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
