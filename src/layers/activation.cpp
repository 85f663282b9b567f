// relu, leaky_relu, gelu (exact, erf), silu, sigmoid, tanh: element-wise, shape-preserving.
#include <fmt/format.h>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "math/activation.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kLeakyKeys[] = {{.name = "slope", .type = KeyType::number, .field = &Attrs::slope}};
static_assert(key_fields_fit(kLeakyKeys));

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
  static const OpDef def{
      .kind = OpKind::relu,
      .name = "relu",
      .infer = same_shape,
      .flops = elementwise_flops,
      .backward_needs = from_output,
  };
  return def;
}

const CpuOp& relu_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::relu,
      .supports = cpu_runs_every_dtype,
      .forward = relu_forward,
      .backward = relu_backward,
  };
  return entry;
}

const OpDef& leaky_relu_op() {
  static const OpDef def{
      .kind = OpKind::leaky_relu,
      .name = "leaky_relu",
      .keys = kLeakyKeys,
      .infer = same_shape,
      .flops = elementwise_flops,
      .backward_needs = from_input,
  };
  return def;
}

const CpuOp& leaky_relu_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::leaky_relu,
      .supports = cpu_runs_every_dtype,
      .forward = leaky_relu_forward,
      .backward = leaky_relu_backward,
  };
  return entry;
}

const OpDef& gelu_op() {
  static const OpDef def{
      .kind = OpKind::gelu,
      .name = "gelu",
      .infer = same_shape,
      .flops = elementwise_flops,
      .backward_needs = from_input,
  };
  return def;
}

const CpuOp& gelu_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::gelu,
      .supports = cpu_runs_every_dtype,
      .forward = gelu_forward,
      .backward = gelu_backward,
  };
  return entry;
}

const OpDef& silu_op() {
  static const OpDef def{
      .kind = OpKind::silu,
      .name = "silu",
      .infer = same_shape,
      .flops = elementwise_flops,
      .backward_needs = from_input,
  };
  return def;
}

const CpuOp& silu_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::silu,
      .supports = cpu_runs_every_dtype,
      .forward = silu_forward,
      .backward = silu_backward,
  };
  return entry;
}

const OpDef& sigmoid_op() {
  static const OpDef def{
      .kind = OpKind::sigmoid,
      .name = "sigmoid",
      .infer = same_shape,
      .flops = elementwise_flops,
      .backward_needs = from_output,
  };
  return def;
}

const CpuOp& sigmoid_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::sigmoid,
      .supports = cpu_runs_every_dtype,
      .forward = sigmoid_forward,
      .backward = sigmoid_backward,
  };
  return entry;
}

const OpDef& tanh_op() {
  static const OpDef def{
      .kind = OpKind::tanh,
      .name = "tanh",
      .infer = same_shape,
      .flops = elementwise_flops,
      .backward_needs = from_output,
  };
  return def;
}

const CpuOp& tanh_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::tanh,
      .supports = cpu_runs_every_dtype,
      .forward = tanh_forward,
      .backward = tanh_backward,
  };
  return entry;
}

}  // namespace kiln::detail
