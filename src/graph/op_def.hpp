#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/graph.hpp"

namespace kiln::detail {

// How a spec key's value is written.
enum class KeyType : std::uint8_t {
  integer,    // 3
  int_pair,   // 3 or [3, 5]
  padding,    // 1, [1, 2] or same
  pool_pad,   // 1 or [1, 2]
  boolean,    // true / false
  number,     // 0.1, 1e-5, 1/9
  names,      // a layer name or a list of them (from:)
  choice,     // one word of a fixed set (init: dirac)
};

struct KeyDef {
  std::string_view name;
  KeyType type;
  bool required = false;
};

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

struct CpuLayer;

// One op: its keys, its shape rule, its parameters and FLOPs, its CPU kernels. The spec parser, the builder,
// `kiln check` and the backends all read this table; adding an op starts here.
struct OpDef {
  OpKind kind;
  std::string_view name;
  std::span<const KeyDef> keys;  // besides name, op, from (and frozen, lr_scale with params)
  int min_inputs = 1;
  int max_inputs = 1;
  bool has_params = false;
  // Output shape, or nullopt after reporting through ctx.
  std::optional<Shape> (*infer)(ShapeCtx& ctx) = nullptr;
  // Parameter shapes, PyTorch names and layouts (nullptr: none).
  void (*params)(const Layer& layer, std::span<const Layer> before, std::vector<Param>& out) = nullptr;
  // Forward FLOPs of one sample; nullopt on overflow.
  std::optional<std::int64_t> (*flops)(const Layer& layer, std::span<const Layer> before) = nullptr;
  BackwardNeeds (*backward_needs)(const Layer& layer) = nullptr;
  // CPU backend (src/backend/cpu_layer.hpp). Forward writes y; backward writes dx (where
  // not nullptr, adding when accumulate says so) and the parameter gradients (where not
  // nullptr, overwriting them).
  void (*cpu_forward)(const CpuLayer& l) = nullptr;
  void (*cpu_backward)(const CpuLayer& l) = nullptr;
  // Floats kept from forward to backward for a batch of `batch` (batchnorm's statistics).
  std::int64_t (*state_floats)(const Layer& layer, std::int64_t batch) = nullptr;
  // Scratch floats one CPU call needs for a batch of `batch` (im2col buffers).
  std::int64_t (*cpu_workspace)(const Layer& layer, std::span<const Layer> before, std::int64_t batch) = nullptr;
};

const OpDef& op_def(OpKind kind);

// "conv 3x3", or with geometry "conv 35x35, stride 1, pad 0".
std::string describe_layer(const Layer& layer, bool geometry);

// Per-op definitions, one per file in src/layers/.
const OpDef& input_op();
const OpDef& conv_op();
const OpDef& maxpool_op();
const OpDef& avgpool_op();
const OpDef& global_avgpool_op();
const OpDef& global_maxpool_op();
const OpDef& batchnorm_op();
const OpDef& relu_op();
const OpDef& leaky_relu_op();
const OpDef& gelu_op();
const OpDef& silu_op();
const OpDef& sigmoid_op();
const OpDef& tanh_op();
const OpDef& dropout_op();
const OpDef& flatten_op();
const OpDef& scale_op();
const OpDef& linear_op();
const OpDef& add_op();
const OpDef& concat_op();

// Shared by ops: elements of one sample (checked), and "elements x factor" FLOPs.
std::optional<std::int64_t> elementwise_flops(const Layer& layer, std::span<const Layer> before);

}  // namespace kiln::detail
