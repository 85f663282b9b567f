#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/error.hpp"
#include "kiln/export.hpp"
#include "kiln/types.hpp"

namespace kiln {

/// Every operation a layer can perform. `input` is the model input, layer 0 of every graph.
enum class OpKind : std::uint8_t {
  input,
  conv,
  maxpool,
  avgpool,
  global_avgpool,
  global_maxpool,
  batchnorm,
  relu,
  leaky_relu,
  gelu,
  silu,
  sigmoid,
  tanh,
  dropout,
  flatten,
  scale,
  linear,
  add,
  concat,
};

/// The spelling of `op` in a model spec ("conv", "maxpool", ...).
KILN_API std::string_view op_name(OpKind op);
/// The op spelled `name` in a model spec, or nullopt.
KILN_API std::optional<OpKind> op_from_name(std::string_view name);
/// Every op's spelling, in declaration order (`input` excluded).
KILN_API std::vector<std::string_view> op_names();

/// A (height, width) pair.
struct Hw {
  std::int64_t h = 0;
  std::int64_t w = 0;
  constexpr bool operator==(const Hw&) const = default;
};

/// Zero padding of the four sides; `same` asks the graph to compute it (stride 1 only).
struct Padding {
  std::int64_t top = 0;
  std::int64_t bottom = 0;
  std::int64_t left = 0;
  std::int64_t right = 0;
  bool same = false;

  static constexpr Padding all(std::int64_t p) { return {p, p, p, p, false}; }
  static constexpr Padding hw(std::int64_t h, std::int64_t w) { return {h, h, w, w, false}; }
  static constexpr Padding same_size() { return {0, 0, 0, 0, true}; }
  constexpr bool symmetric() const { return top == bottom && left == right; }
  constexpr bool operator==(const Padding&) const = default;
};

/// Options of a layer. One flat record for every op: each op reads the fields it documents
/// (README "Spec reference"); the others keep their defaults.
struct Attrs {
  std::int64_t out = 0;             ///< conv, linear: output channels / features
  Hw kernel{0, 0};                  ///< conv, pools
  std::optional<Hw> stride;         ///< default: 1 for conv, the kernel for pools
  Padding pad;                      ///< conv, pools
  Hw dilation{1, 1};                ///< conv
  std::int64_t groups = 1;          ///< conv
  bool bias = true;                 ///< conv, linear, batchnorm (false: bias fixed at 0)
  bool ceil = false;                ///< pools: ceil instead of floor for the output size
  double eps = 1e-5;                ///< batchnorm
  double momentum = 0.1;            ///< batchnorm, PyTorch's meaning
  bool weight = true;               ///< batchnorm (false: scale fixed at 1, not trained)
  double slope = 0.01;              ///< leaky_relu
  double p = 0.5;                   ///< dropout
  double factor = 1.0;              ///< scale
  std::optional<std::int64_t> in;   ///< conv/linear `in`, batchnorm `features`: checked
  bool frozen = false;              ///< layers with parameters: no parameter gradients
  double lr_scale = 1.0;            ///< layers with parameters: learning-rate multiplier
};

/// A layer as the user declares it (in a spec or through GraphBuilder), before validation.
struct LayerDef {
  std::string name;                 ///< empty: named "<op><position>"
  OpKind op = OpKind::relu;
  std::vector<std::string> inputs;  ///< empty: the previous layer; "input": the model input
  Attrs attrs;
  SourceLoc loc;                    ///< where the spec declares it (unknown for the builder)
  /// Set by the spec parser when the declaration itself was invalid (already reported):
  /// the layer is skipped and layers downstream of it are not reported again.
  bool invalid = false;

  LayerDef& named(std::string n) { name = std::move(n); return *this; }
  LayerDef& from(std::vector<std::string> names) { inputs = std::move(names); return *this; }
  LayerDef& stride(std::int64_t s) { attrs.stride = Hw{s, s}; return *this; }
  LayerDef& stride(Hw s) { attrs.stride = s; return *this; }
  LayerDef& pad(std::int64_t p) { attrs.pad = Padding::all(p); return *this; }
  LayerDef& pad(Padding p) { attrs.pad = p; return *this; }
  LayerDef& pad_same() { attrs.pad = Padding::same_size(); return *this; }
  LayerDef& dilation(std::int64_t d) { attrs.dilation = {d, d}; return *this; }
  LayerDef& groups(std::int64_t g) { attrs.groups = g; return *this; }
  LayerDef& bias(bool b) { attrs.bias = b; return *this; }
  LayerDef& ceil(bool c = true) { attrs.ceil = c; return *this; }
  LayerDef& in(std::int64_t n) { attrs.in = n; return *this; }
  LayerDef& eps(double e) { attrs.eps = e; return *this; }
  LayerDef& momentum(double m) { attrs.momentum = m; return *this; }
  LayerDef& weight(bool w) { attrs.weight = w; return *this; }
  LayerDef& frozen(bool f = true) { attrs.frozen = f; return *this; }
  LayerDef& lr_scale(double s) { attrs.lr_scale = s; return *this; }
  LayerDef& at(SourceLoc l) { loc = std::move(l); return *this; }
};

/// Factories for LayerDef, one per op: `b.add(layers::conv(32, 5).pad(2).named("conv1"))`.
namespace layers {
KILN_API LayerDef conv(std::int64_t out, std::int64_t kernel);
KILN_API LayerDef conv(std::int64_t out, Hw kernel);
KILN_API LayerDef maxpool(std::int64_t kernel);
KILN_API LayerDef maxpool(Hw kernel);
KILN_API LayerDef avgpool(std::int64_t kernel);
KILN_API LayerDef avgpool(Hw kernel);
KILN_API LayerDef global_avgpool();
KILN_API LayerDef global_maxpool();
KILN_API LayerDef batchnorm();
KILN_API LayerDef relu();
KILN_API LayerDef leaky_relu(double slope = 0.01);
KILN_API LayerDef gelu();
KILN_API LayerDef silu();
KILN_API LayerDef sigmoid();
KILN_API LayerDef tanh();
KILN_API LayerDef dropout(double p = 0.5);
KILN_API LayerDef flatten();
KILN_API LayerDef scale(double factor);
KILN_API LayerDef linear(std::int64_t out);
KILN_API LayerDef add(std::vector<std::string> inputs);
KILN_API LayerDef concat(std::vector<std::string> inputs);
}  // namespace layers

/// What a parameter tensor is to its layer. `running_*` are batchnorm buffers (not trained).
enum class ParamRole : std::uint8_t { weight, bias, running_mean, running_var };

/// A parameter or buffer, named and laid out as in PyTorch (`conv1.weight` is
/// [out, in/groups, kh, kw], `fc.weight` is [out, in]).
struct Param {
  std::string name;
  int layer = 0;
  ParamRole role = ParamRole::weight;
  std::vector<std::int64_t> dims;
  std::int64_t elements = 0;
  /// False for buffers, for batchnorm scale/shift fixed by `weight: false` / `bias: false`,
  /// and for parameters of frozen layers.
  bool trainable = true;
  /// True for running statistics: state, not a learnable parameter.
  bool buffer = false;
};

/// A validated layer: its inputs resolved to earlier layers and its output shape known.
struct Layer {
  int index = 0;                    ///< position in Graph::layers(); 0 is the model input
  std::string name;
  OpKind op = OpKind::input;
  Attrs attrs;                      ///< with defaults resolved (stride, `same` padding)
  std::vector<int> inputs;          ///< indices of earlier layers
  std::vector<int> consumers;       ///< indices of later layers that read this one
  Shape shape;                      ///< output shape of one sample
  std::int64_t flops = 0;           ///< per sample, forward; a multiply-add counts 2
  std::vector<int> params;          ///< indices into Graph::params()
  SourceLoc loc;
};

/// A validated, immutable, topologically ordered layer graph. Cheap to copy (shared).
class KILN_API Graph {
 public:
  struct Data;
  explicit Graph(std::shared_ptr<const Data> data);

  const std::string& name() const;
  /// The spec file the graph came from, or empty for a builder graph.
  const std::string& source() const;
  Shape input_shape() const;
  std::int64_t classes() const;
  /// All layers, the model input first; every layer's inputs come before it.
  std::span<const Layer> layers() const;
  std::span<const Param> params() const;
  /// The last layer, whose output is the [classes] vector of logits.
  const Layer& output() const;
  /// The layer called `name`, or nullptr.
  const Layer* find(std::string_view name) const;
  /// Number of elements of all parameters (weights and biases, trainable or fixed; not
  /// batchnorm running statistics), as PyTorch's `sum(p.numel() for p in parameters())`.
  std::int64_t parameter_count() const;
  /// Forward FLOPs of one sample.
  std::int64_t flops() const;
  /// Warnings found while building (unused layers), in source order.
  std::span<const Diagnostic> warnings() const;

 private:
  std::shared_ptr<const Data> data_;
};

/// Builds a Graph from layer declarations. `build()` runs every shape rule and reports
/// every problem at once as a GraphError; nothing is allocated for tensors.
class KILN_API GraphBuilder {
 public:
  /// `input` is one sample's [C, H, W]; anything else is reported by build().
  GraphBuilder(std::string name, std::vector<std::int64_t> input, std::int64_t classes);
  GraphBuilder(std::string name, Shape input, std::int64_t classes);
  ~GraphBuilder();
  GraphBuilder(GraphBuilder&&) noexcept;
  GraphBuilder& operator=(GraphBuilder&&) noexcept;

  /// Appends a layer; returns *this for chaining.
  GraphBuilder& add(LayerDef layer);
  /// Source positions for model-level diagnostics (the spec loader sets them).
  void set_source(SourceLoc model, SourceLoc input, SourceLoc classes);
  /// A problem found before build() (by the spec parser), reported together with the rest.
  void report(Diagnostic diagnostic);
  /// Validates everything; throws GraphError listing every error found.
  Graph build() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kiln
