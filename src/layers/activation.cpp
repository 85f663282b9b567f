// relu, leaky_relu, gelu (exact, erf), silu, sigmoid, tanh: element-wise, shape-preserving.
#include <fmt/format.h>

#include "graph/op_def.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kLeakyKeys[] = {{"slope", KeyType::number}};

std::optional<Shape> same_shape(ShapeCtx& ctx) { return ctx.in(); }

BackwardNeeds from_output(const Layer&) { return {.input = false, .output = true}; }
BackwardNeeds from_input(const Layer&) { return {.input = true, .output = false}; }

}  // namespace

const OpDef& relu_op() {
  static const OpDef def{OpKind::relu, "relu", {}, 1, 1, false, same_shape, nullptr, elementwise_flops, from_output};
  return def;
}

const OpDef& leaky_relu_op() {
  static const OpDef def{OpKind::leaky_relu, "leaky_relu", kLeakyKeys, 1, 1, false, same_shape, nullptr, elementwise_flops,
                         from_input};
  return def;
}

const OpDef& gelu_op() {
  static const OpDef def{OpKind::gelu, "gelu", {}, 1, 1, false, same_shape, nullptr, elementwise_flops, from_input};
  return def;
}

const OpDef& silu_op() {
  static const OpDef def{OpKind::silu, "silu", {}, 1, 1, false, same_shape, nullptr, elementwise_flops, from_input};
  return def;
}

const OpDef& sigmoid_op() {
  static const OpDef def{OpKind::sigmoid, "sigmoid", {}, 1, 1, false, same_shape, nullptr, elementwise_flops, from_output};
  return def;
}

const OpDef& tanh_op() {
  static const OpDef def{OpKind::tanh, "tanh", {}, 1, 1, false, same_shape, nullptr, elementwise_flops, from_output};
  return def;
}

}  // namespace kiln::detail
