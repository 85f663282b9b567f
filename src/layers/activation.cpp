// relu, leaky_relu, gelu (exact, erf), silu, sigmoid, tanh: element-wise, shape-preserving.
#include <fmt/format.h>

#include "backend/cpu_layer.hpp"
#include "graph/op_def.hpp"
#include "math/activation.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kLeakyKeys[] = {{"slope", KeyType::number}};

std::optional<Shape> same_shape(ShapeCtx& ctx) { return ctx.in(); }

BackwardNeeds from_output(const Layer&) { return {.input = false, .output = true}; }
BackwardNeeds from_input(const Layer&) { return {.input = true, .output = false}; }

// ---- CPU: element-wise; each element reads only its own index, so in-place is safe --------

template <class F>
void map(const CpuLayer& l, F f) {
  const std::int64_t count = l.n * l.out_shape().elements();
  const float* x = l.x[0];
  float* y = l.y;
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t i = 0; i < count; ++i) y[i] = f(x[i]);
}

// dx = g(kept, dy), where `kept` is what backward_needs keeps: y or x.
template <class G>
void map_grad(const CpuLayer& l, const float* kept, G g) {
  float* dx = l.dx[0];
  if (!dx) return;
  const std::int64_t count = l.n * l.out_shape().elements();
  const float* dy = l.dy;
  if (l.accumulate[0]) {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i) dx[i] += g(kept[i], dy[i]);
  } else {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i) dx[i] = g(kept[i], dy[i]);
  }
}

float slope(const CpuLayer& l) { return static_cast<float>(l.layer->attrs.slope); }

void relu_forward(const CpuLayer& l) { map(l, [](float x) { return math::relu_fwd(x); }); }
void relu_backward(const CpuLayer& l) { map_grad(l, l.y, [](float k, float dy) { return math::relu_bwd(k, dy); }); }
void leaky_relu_forward(const CpuLayer& l) {
  map(l, [s = slope(l)](float x) { return math::leaky_relu_fwd(x, s); });
}
void leaky_relu_backward(const CpuLayer& l) {
  map_grad(l, l.x[0], [s = slope(l)](float x, float dy) { return math::leaky_relu_bwd(x, dy, s); });
}
void gelu_forward(const CpuLayer& l) { map(l, [](float x) { return math::gelu_fwd(x); }); }
void gelu_backward(const CpuLayer& l) { map_grad(l, l.x[0], [](float k, float dy) { return math::gelu_bwd(k, dy); }); }
void silu_forward(const CpuLayer& l) { map(l, [](float x) { return math::silu_fwd(x); }); }
void silu_backward(const CpuLayer& l) { map_grad(l, l.x[0], [](float k, float dy) { return math::silu_bwd(k, dy); }); }
void sigmoid_forward(const CpuLayer& l) { map(l, [](float x) { return math::sigmoid_fwd(x); }); }
void sigmoid_backward(const CpuLayer& l) { map_grad(l, l.y, [](float k, float dy) { return math::sigmoid_bwd(k, dy); }); }
void tanh_forward(const CpuLayer& l) { map(l, [](float x) { return math::tanh_fwd(x); }); }
void tanh_backward(const CpuLayer& l) { map_grad(l, l.y, [](float k, float dy) { return math::tanh_bwd(k, dy); }); }

}  // namespace

const OpDef& relu_op() {
  static const OpDef def{OpKind::relu, "relu", {}, 1, 1, false, same_shape, nullptr, elementwise_flops, from_output,
                         relu_forward, relu_backward};
  return def;
}

const OpDef& leaky_relu_op() {
  static const OpDef def{OpKind::leaky_relu, "leaky_relu", kLeakyKeys, 1, 1, false, same_shape, nullptr, elementwise_flops,
                         from_input, leaky_relu_forward, leaky_relu_backward};
  return def;
}

const OpDef& gelu_op() {
  static const OpDef def{OpKind::gelu, "gelu", {}, 1, 1, false, same_shape, nullptr, elementwise_flops, from_input,
                         gelu_forward, gelu_backward};
  return def;
}

const OpDef& silu_op() {
  static const OpDef def{OpKind::silu, "silu", {}, 1, 1, false, same_shape, nullptr, elementwise_flops, from_input,
                         silu_forward, silu_backward};
  return def;
}

const OpDef& sigmoid_op() {
  static const OpDef def{OpKind::sigmoid, "sigmoid", {}, 1, 1, false, same_shape, nullptr, elementwise_flops, from_output,
                         sigmoid_forward, sigmoid_backward};
  return def;
}

const OpDef& tanh_op() {
  static const OpDef def{OpKind::tanh, "tanh", {}, 1, 1, false, same_shape, nullptr, elementwise_flops, from_output,
                         tanh_forward, tanh_backward};
  return def;
}

}  // namespace kiln::detail
