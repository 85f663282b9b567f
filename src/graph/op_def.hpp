#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "graph/key_def.hpp"
#include "kiln/graph.hpp"

namespace kiln::detail {

// What a shape rule sees: the layer being built (inputs resolved, attributes to be
// resolved in place) and the layers before it.
struct ShapeCtx {
  Layer& layer;
  std::span<const Layer> before;
  std::vector<Diagnostic>& diagnostics;

  const Layer& input(std::size_t i = 0) const { return before[static_cast<std::size_t>(layer.inputs[i])]; }
  const Shape& in(std::size_t i = 0) const { return input(i).shape; }
  // "input 'pool1' is 32x16x16"
  std::string describe_input(std::size_t i = 0) const;
  // Adds an error for this layer; `geometry` puts kernel, stride and padding in the context.
  void error(std::string message, std::vector<std::string> notes = {}, std::string hint = {},
             bool geometry = false) const;
  // Requires a C x H x W input; reports "expects 4-D" otherwise.
  bool require_image() const;
};

// How backward uses the forward tensors; the memory planner keeps them alive for it.
struct BackwardNeeds {
  bool input = false;
  bool output = false;
};

// One op as the graph sees it: its keys, its shape rule, its parameters and FLOPs, and what
// its backward reads. The spec parser, the builder, `kiln check` and the memory planner read
// this table; each backend keeps its own table of kernels (the CPU's: backend/cpu_ops.hpp).
// Adding an op starts here. Entries are written with designated initializers.
struct OpDef {
  OpKind kind;
  std::string_view name;
  std::span<const KeyDef> keys = {};  // besides name, op, from (and param_keys() with params)
  int min_inputs = 1;
  int max_inputs = 1;
  bool has_params = false;
  // Output shape, or nullopt after reporting through ctx. Every op with inputs has one; the
  // model input's shape is the spec's `input`.
  std::optional<Shape> (*infer)(ShapeCtx& ctx) = nullptr;
  // Parameter shapes, PyTorch names and layouts (required when has_params).
  void (*params)(const Layer& layer, std::span<const Layer> before, std::vector<Param>& out) = nullptr;
  // Forward FLOPs of one sample; nullopt on overflow.
  std::optional<std::int64_t> (*flops)(const Layer& layer, std::span<const Layer> before) = nullptr;
  BackwardNeeds (*backward_needs)(const Layer& layer) = nullptr;
  // The constant a parameter of this role starts at (a normalization's scale 1, shift 0);
  // nullptr: PyTorch's default kaiming-uniform of the layer's fan-in.
  float (*initial_value)(ParamRole role) = nullptr;
  // How errors name the layer ("groupnorm, 4 groups"); nullptr: the op's name.
  std::string (*describe)(const Layer& layer) = nullptr;
};

// The number of OpKinds, from kLastOpKind (include/kiln/graph.hpp, beside the enum). The op
// tables of the graph and of each backend static_assert their size against it, and check at
// first use that entry i is OpKind i.
inline constexpr std::size_t kOpCount = static_cast<std::size_t>(kLastOpKind) + 1;

// graph/ops.def, the list every op table is built from, has one line per OpKind.
inline constexpr std::size_t kOpsListed = 0
#define KILN_OP(op, Camel) +1
#include "graph/ops.def"
    ;
static_assert(kOpsListed == kOpCount, "graph/ops.def must list every OpKind, in OpKind order");

// The graph's op table, in OpKind order, checked by check_op_table on first use.
std::span<const OpDef> op_table();
const OpDef& op_def(OpKind kind);

// Throws std::logic_error naming the first bad slot: a table of the wrong size, an entry
// whose kind is not its index, a missing name, shape rule, FLOPs, backward_needs or params
// (when has_params), inputs min > max, or a key whose field does not fit its type (in the
// entry's keys or in param_keys()).
void check_op_table(std::span<const OpDef> table);

// The keys every layer with parameters takes: frozen, lr_scale, train_epochs.
std::span<const KeyDef> param_keys();

// "conv 3x3", or with geometry "conv 35x35, stride 1, pad 0".
std::string describe_layer(const Layer& layer, bool geometry);

// Per-op definitions, one per file in src/layers/: `conv_op()`, ... (graph/ops.def lists them).
#define KILN_OP(op, Camel) const OpDef& op##_op();
#include "graph/ops.def"

// Shared by ops: elements of one sample (checked), and "elements x factor" FLOPs.
std::optional<std::int64_t> elementwise_flops(const Layer& layer, std::span<const Layer> before);

}  // namespace kiln::detail
