#pragma once

/// @file
/// Layer graphs: declaring layers (GraphBuilder, kiln::layers), and the validated Graph.

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
  input,           ///< the model input
  conv,            ///< 2-D convolution (groups, dilation, padding)
  maxpool,         ///< max pooling (floor or ceil mode)
  avgpool,         ///< average pooling, padding counted (PyTorch's count_include_pad)
  global_avgpool,  ///< mean over height and width, to C x 1 x 1
  global_maxpool,  ///< max over height and width, to C x 1 x 1
  batchnorm,       ///< batch normalization over channels (or features)
  relu,            ///< max(x, 0)
  leaky_relu,      ///< x, or slope * x below 0
  gelu,            ///< x * Phi(x) (the erf form)
  silu,            ///< x * sigmoid(x)
  sigmoid,         ///< 1 / (1 + exp(-x))
  tanh,            ///< tanh(x)
  dropout,         ///< zeroes each element with probability p in training, scales the rest
  flatten,         ///< a C x H x W feature map to a vector, channel-major (PyTorch's order)
  scale,           ///< multiplies by a constant factor
  linear,          ///< fully connected: x W^T + b
  add,             ///< element-wise sum of inputs of one shape
  concat,          ///< concatenation along channels
  groupnorm,       ///< group normalization over channel groups, per sample (PyTorch's GroupNorm)
  mul,             ///< element-wise product of two inputs; the second may be one value per channel
  upsample,        ///< nearest-neighbour upsampling by an integer factor
};

/// The last enumerator of OpKind: a new op goes before it and is named here, the one place
/// every op table (the graph's and each backend's) takes its size from.
inline constexpr OpKind kLastOpKind = OpKind::upsample;

/// The spelling of `op` in a model spec ("conv", "maxpool", ...).
KILN_API std::string_view op_name(OpKind op);
/// The op spelled `name` in a model spec, or nullopt.
KILN_API std::optional<OpKind> op_from_name(std::string_view name);
/// Every op's spelling, in declaration order (`input` excluded).
KILN_API std::vector<std::string_view> op_names();

/// A (height, width) pair.
struct Hw {
  std::int64_t h = 0;  ///< height
  std::int64_t w = 0;  ///< width
  /// Both equal.
  constexpr bool operator==(const Hw&) const = default;
};

/// Zero padding of the four sides; `same` asks the graph to compute it (stride 1 only).
struct Padding {
  std::int64_t top = 0;     ///< rows above
  std::int64_t bottom = 0;  ///< rows below
  std::int64_t left = 0;    ///< columns on the left
  std::int64_t right = 0;   ///< columns on the right
  bool same = false;        ///< `pad: same`: computed so that the output has the input's size

  /// `p` on every side.
  static constexpr Padding all(std::int64_t p) { return {p, p, p, p, false}; }
  /// `h` above and below, `w` left and right.
  static constexpr Padding hw(std::int64_t h, std::int64_t w) { return {h, h, w, w, false}; }
  /// `pad: same`.
  static constexpr Padding same_size() { return {0, 0, 0, 0, true}; }
  /// Top equals bottom and left equals right.
  constexpr bool symmetric() const { return top == bottom && left == right; }
  /// Same sides and the same `same`.
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
  std::int64_t groups = 1;          ///< conv, groupnorm
  bool bias = true;                 ///< conv, linear, batchnorm (false: bias fixed at 0)
  bool ceil = false;                ///< pools: ceil instead of floor for the output size
  double eps = 1e-5;                ///< batchnorm, groupnorm
  double momentum = 0.1;            ///< batchnorm, PyTorch's meaning
  bool weight = true;               ///< batchnorm (false: scale fixed at 1, not trained)
  double slope = 0.01;              ///< leaky_relu
  double p = 0.5;                   ///< dropout
  double factor = 1.0;              ///< scale
  Hw scale{1, 1};                   ///< upsample: the integer factor of height and width
  std::optional<std::int64_t> in;   ///< conv/linear `in`, batchnorm `features`: checked
  bool frozen = false;              ///< layers with parameters: no parameter gradients
  double lr_scale = 1.0;            ///< layers with parameters: learning-rate multiplier
  /// Layers with parameters: train only during the first N epochs, then stop updating.
  std::optional<double> train_epochs;
  /// conv: how the weight starts. `dirac`: PyTorch's default, then the identity on the
  /// first `in` filters (torch.nn.init.dirac_). `whiten`: from the training data before
  /// training (the eigenvectors of the patch covariance and their negatives), then frozen.
  enum class Init : std::uint8_t {
    standard,  ///< PyTorch's default (kaiming-uniform)
    dirac,     ///< the default, then the identity on the first `in` filters
    whiten,    ///< from the training data's patch covariance, then frozen
  } init = Init::standard;  ///< conv: how the weight starts
};

/// A layer as the user declares it (in a spec or through GraphBuilder), before validation.
struct LayerDef {
  std::string name;                 ///< empty: named "<op><position>"
  OpKind op = OpKind::relu;         ///< what the layer does
  std::vector<std::string> inputs;  ///< empty: the previous layer; "input": the model input
  Attrs attrs;                      ///< its options (those of `op`)
  SourceLoc loc;                    ///< where the spec declares it (unknown for the builder)
  /// Set by the spec parser when the declaration itself was invalid (already reported):
  /// the layer is skipped and layers downstream of it are not reported again.
  bool invalid = false;
  /// Lines added to every diagnostic about this layer: for a layer of a spec block, which
  /// instance of which block it comes from, with the parameter values, and where.
  std::vector<std::string> notes;
  /// The outermost block instance the layer belongs to ("layer2.0"), empty outside blocks;
  /// `kiln check --fold` shows each instance as one row.
  std::string instance;
  /// The block that `instance` instantiates ("basic").
  std::string block;

  /// Sets `name`.
  LayerDef& named(std::string n) { name = std::move(n); return *this; }
  /// Sets `inputs` (layer names; "input" is the model input).
  LayerDef& from(std::vector<std::string> names) { inputs = std::move(names); return *this; }
  /// Sets Attrs::stride to `s` in both directions.
  LayerDef& stride(std::int64_t s) { attrs.stride = Hw{s, s}; return *this; }
  /// Sets Attrs::stride.
  LayerDef& stride(Hw s) { attrs.stride = s; return *this; }
  /// Sets Attrs::pad to `p` on every side.
  LayerDef& pad(std::int64_t p) { attrs.pad = Padding::all(p); return *this; }
  /// Sets Attrs::pad.
  LayerDef& pad(Padding p) { attrs.pad = p; return *this; }
  /// Sets Attrs::pad to `same`.
  LayerDef& pad_same() { attrs.pad = Padding::same_size(); return *this; }
  /// Sets Attrs::dilation to `d` in both directions.
  LayerDef& dilation(std::int64_t d) { attrs.dilation = {d, d}; return *this; }
  /// Sets Attrs::groups.
  LayerDef& groups(std::int64_t g) { attrs.groups = g; return *this; }
  /// Sets Attrs::bias.
  LayerDef& bias(bool b) { attrs.bias = b; return *this; }
  /// Sets Attrs::ceil.
  LayerDef& ceil(bool c = true) { attrs.ceil = c; return *this; }
  /// Sets Attrs::in (checked against the inferred value).
  LayerDef& in(std::int64_t n) { attrs.in = n; return *this; }
  /// Sets Attrs::eps.
  LayerDef& eps(double e) { attrs.eps = e; return *this; }
  /// Sets Attrs::momentum.
  LayerDef& momentum(double m) { attrs.momentum = m; return *this; }
  /// Sets Attrs::weight.
  LayerDef& weight(bool w) { attrs.weight = w; return *this; }
  /// Sets Attrs::frozen.
  LayerDef& frozen(bool f = true) { attrs.frozen = f; return *this; }
  /// Sets Attrs::lr_scale.
  LayerDef& lr_scale(double s) { attrs.lr_scale = s; return *this; }
  /// Sets Attrs::train_epochs.
  LayerDef& train_epochs(double e) { attrs.train_epochs = e; return *this; }
  /// Sets Attrs::init.
  LayerDef& init(Attrs::Init i) { attrs.init = i; return *this; }
  /// Sets `loc`.
  LayerDef& at(SourceLoc l) { loc = std::move(l); return *this; }
};

/// Factories for LayerDef, one per op: `b.add(layers::conv(32, 5).pad(2).named("conv1"))`.
namespace layers {
/// A convolution with `out` output channels and a square `kernel` (stride 1, no padding).
KILN_API LayerDef conv(std::int64_t out, std::int64_t kernel);
/// A convolution with `out` output channels and a `kernel.h` x `kernel.w` kernel.
KILN_API LayerDef conv(std::int64_t out, Hw kernel);
/// Max pooling over a square window; the stride defaults to the window.
KILN_API LayerDef maxpool(std::int64_t kernel);
/// Max pooling over an `kernel.h` x `kernel.w` window.
KILN_API LayerDef maxpool(Hw kernel);
/// Average pooling over a square window; the stride defaults to the window.
KILN_API LayerDef avgpool(std::int64_t kernel);
/// Average pooling over an `kernel.h` x `kernel.w` window.
KILN_API LayerDef avgpool(Hw kernel);
/// Mean over height and width (C x 1 x 1; follow with flatten).
KILN_API LayerDef global_avgpool();
/// Max over height and width (C x 1 x 1; follow with flatten).
KILN_API LayerDef global_maxpool();
/// Batch normalization; the feature count is inferred.
KILN_API LayerDef batchnorm();
/// ReLU.
KILN_API LayerDef relu();
/// Leaky ReLU with the given negative slope.
KILN_API LayerDef leaky_relu(double slope = 0.01);
/// GELU.
KILN_API LayerDef gelu();
/// SiLU (swish).
KILN_API LayerDef silu();
/// Logistic sigmoid.
KILN_API LayerDef sigmoid();
/// Hyperbolic tangent.
KILN_API LayerDef tanh();
/// Dropout with drop probability `p`.
KILN_API LayerDef dropout(double p = 0.5);
/// Flatten a feature map to a vector.
KILN_API LayerDef flatten();
/// Multiply by a constant.
KILN_API LayerDef scale(double factor);
/// A fully connected layer with `out` features; its input size is inferred.
KILN_API LayerDef linear(std::int64_t out);
/// The sum of the named layers' outputs.
KILN_API LayerDef add(std::vector<std::string> inputs);
/// The named layers' outputs concatenated along channels.
KILN_API LayerDef concat(std::vector<std::string> inputs);
/// Group normalization over `groups` groups of channels (which it must divide).
KILN_API LayerDef groupnorm(std::int64_t groups);
/// The element-wise product of two named layers' outputs; the second may be C x 1 x 1 or a
/// vector of C features (a squeeze-and-excitation gate), applied over height and width.
KILN_API LayerDef mul(std::vector<std::string> inputs);
/// Nearest-neighbour upsampling by `scale` in both directions.
KILN_API LayerDef upsample(std::int64_t scale);
/// Nearest-neighbour upsampling by `scale.h` rows and `scale.w` columns.
KILN_API LayerDef upsample(Hw scale);
}  // namespace layers

/// What a parameter tensor is to its layer. `running_*` are batchnorm buffers (not trained).
enum class ParamRole : std::uint8_t {
  weight,        ///< conv and linear weights, batchnorm scale
  bias,          ///< biases, batchnorm shift
  running_mean,  ///< batchnorm running mean (a buffer)
  running_var,   ///< batchnorm running variance (a buffer)
};

/// A parameter or buffer, named and laid out as in PyTorch (`conv1.weight` is
/// [out, in/groups, kh, kw], `fc.weight` is [out, in]).
struct Param {
  std::string name;                    ///< `<layer>.weight`, `<layer>.bias`, `<layer>.running_mean`, ...
  int layer = 0;                       ///< index of its layer in Graph::layers()
  ParamRole role = ParamRole::weight;  ///< what it is to its layer
  std::vector<std::int64_t> dims;      ///< PyTorch's shape
  std::int64_t elements = 0;           ///< product of `dims`
  /// False for buffers, for batchnorm scale/shift fixed by `weight: false` / `bias: false`,
  /// and for parameters of frozen layers.
  bool trainable = true;
  /// True for running statistics: state, not a learnable parameter.
  bool buffer = false;
};

/// A validated layer: its inputs resolved to earlier layers and its output shape known.
struct Layer {
  int index = 0;                    ///< position in Graph::layers(); 0 is the model input
  std::string name;                 ///< unique in the graph
  OpKind op = OpKind::input;        ///< what it does
  Attrs attrs;                      ///< with defaults resolved (stride, `same` padding)
  std::vector<int> inputs;          ///< indices of earlier layers
  std::vector<int> consumers;       ///< indices of later layers that read this one
  Shape shape;                      ///< output shape of one sample
  std::int64_t flops = 0;           ///< per sample, forward; a multiply-add counts 2
  std::vector<int> params;          ///< indices into Graph::params()
  SourceLoc loc;                    ///< where the spec declares it (unknown for the builder)
  std::string instance;             ///< LayerDef::instance: its outermost block instance, or empty
  std::string block;                ///< LayerDef::block: the block that instance instantiates
};

/// A validated, immutable, topologically ordered layer graph. Cheap to copy (shared).
class KILN_API Graph {
 public:
  /// The graph's contents, private to the library.
  struct Data;
  /// Made by GraphBuilder::build(); not for users.
  explicit Graph(std::shared_ptr<const Data> data);

  /// The model's name (the spec's `name`, or the builder's).
  const std::string& name() const;
  /// The spec file the graph came from, or empty for a builder graph.
  const std::string& source() const;
  /// One sample's shape, C x H x W.
  Shape input_shape() const;
  /// Number of classes: the size of the logits vector.
  std::int64_t classes() const;
  /// All layers, the model input first; every layer's inputs come before it.
  std::span<const Layer> layers() const;
  /// Every parameter and buffer, in layer order (PyTorch's state_dict order).
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
  /// The same with the input as a Shape.
  GraphBuilder(std::string name, Shape input, std::int64_t classes);
  ~GraphBuilder();
  /// Moves the declarations; the source may only be destroyed or assigned.
  GraphBuilder(GraphBuilder&&) noexcept;
  /// See the move constructor.
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
