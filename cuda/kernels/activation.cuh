#pragma once

// The activations as device functors, fwd(x) and bwd(saved, dy), for the element-wise kernels
// (elementwise.cu) and batchnorm's fused ones (batchnorm.cu). `saved` is what
// OpDef::backward_needs keeps: the output y where kSavesOutput, the input x otherwise. The
// per-element math is math/activation.hpp's.
#include <stdexcept>
#include <string>

#include "kiln/graph.hpp"
#include "math/activation.hpp"

namespace kiln::cuda {

struct Relu {
  static constexpr bool kSavesOutput = true;
  __device__ float fwd(float x) const { return math::relu_fwd(x); }
  __device__ float bwd(float y, float dy) const { return math::relu_bwd(y, dy); }
};
struct LeakyRelu {
  static constexpr bool kSavesOutput = false;
  float slope;
  __device__ float fwd(float x) const { return math::leaky_relu_fwd(x, slope); }
  __device__ float bwd(float x, float dy) const { return math::leaky_relu_bwd(x, dy, slope); }
};
struct Gelu {
  static constexpr bool kSavesOutput = false;
  __device__ float fwd(float x) const { return math::gelu_fwd(x); }
  __device__ float bwd(float x, float dy) const { return math::gelu_bwd(x, dy); }
};
struct Silu {
  static constexpr bool kSavesOutput = false;
  __device__ float fwd(float x) const { return math::silu_fwd(x); }
  __device__ float bwd(float x, float dy) const { return math::silu_bwd(x, dy); }
};
struct Sigmoid {
  static constexpr bool kSavesOutput = true;
  __device__ float fwd(float x) const { return math::sigmoid_fwd(x); }
  __device__ float bwd(float y, float dy) const { return math::sigmoid_bwd(y, dy); }
};
struct Tanh {
  static constexpr bool kSavesOutput = true;
  __device__ float fwd(float x) const { return math::tanh_fwd(x); }
  __device__ float bwd(float y, float dy) const { return math::tanh_bwd(y, dy); }
};

// Calls f with the functor of activation `op` (slope: leaky_relu's); any other op throws
// std::invalid_argument naming `launcher`.
template <class F>
void with_activation(const char* launcher, OpKind op, float slope, F&& f) {
  switch (op) {
    case OpKind::relu: return f(Relu{});
    case OpKind::leaky_relu: return f(LeakyRelu{slope});
    case OpKind::gelu: return f(Gelu{});
    case OpKind::silu: return f(Silu{});
    case OpKind::sigmoid: return f(Sigmoid{});
    case OpKind::tanh: return f(Tanh{});
    default: break;
  }
  throw std::invalid_argument(std::string(launcher) + ": '" + std::string(op_name(op)) + "' is not an activation");
}

}  // namespace kiln::cuda
