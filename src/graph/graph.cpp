#include "kiln/graph.hpp"

#include "graph/graph_data.hpp"
#include "graph/op_def.hpp"

namespace kiln {

std::string_view op_name(OpKind op) { return detail::op_def(op).name; }

namespace {

// The model input is layer 0 of every graph, from the spec's `input`, never a layer a spec
// or a builder declares; only the ops that take inputs have a spelling in a layer's `op`.
bool declarable(const detail::OpDef& def) { return def.max_inputs > 0; }

}  // namespace

std::optional<OpKind> op_from_name(std::string_view name) {
  for (const detail::OpDef& def : detail::op_table())
    if (declarable(def) && def.name == name) return def.kind;
  return std::nullopt;
}

std::vector<std::string_view> op_names() {
  std::vector<std::string_view> names;
  for (const detail::OpDef& def : detail::op_table())
    if (declarable(def)) names.push_back(def.name);
  return names;
}

Graph::Graph(std::shared_ptr<const Data> data) : data_(std::move(data)) {}

const std::string& Graph::name() const { return data_->name; }
const std::string& Graph::source() const { return data_->source; }
Shape Graph::input_shape() const { return data_->input; }
std::int64_t Graph::classes() const { return data_->classes; }
std::span<const Layer> Graph::layers() const { return data_->layers; }
std::span<const Param> Graph::params() const { return data_->params; }
const Layer& Graph::output() const { return data_->layers.back(); }
std::int64_t Graph::parameter_count() const { return data_->parameter_count; }
std::int64_t Graph::flops() const { return data_->flops; }
std::span<const Diagnostic> Graph::warnings() const { return data_->warnings; }

const Layer* Graph::find(std::string_view name) const {
  for (const auto& layer : data_->layers)
    if (layer.name == name) return &layer;
  return nullptr;
}

namespace layers {

namespace {

LayerDef make(OpKind op) {
  LayerDef def;
  def.op = op;
  return def;
}

LayerDef with_kernel(OpKind op, Hw kernel) {
  LayerDef def = make(op);
  def.attrs.kernel = kernel;
  return def;
}

}  // namespace

LayerDef conv(std::int64_t out, std::int64_t kernel) { return conv(out, Hw{kernel, kernel}); }
LayerDef conv(std::int64_t out, Hw kernel) {
  LayerDef def = with_kernel(OpKind::conv, kernel);
  def.attrs.out = out;
  return def;
}
LayerDef maxpool(std::int64_t kernel) { return with_kernel(OpKind::maxpool, {kernel, kernel}); }
LayerDef maxpool(Hw kernel) { return with_kernel(OpKind::maxpool, kernel); }
LayerDef avgpool(std::int64_t kernel) { return with_kernel(OpKind::avgpool, {kernel, kernel}); }
LayerDef avgpool(Hw kernel) { return with_kernel(OpKind::avgpool, kernel); }
LayerDef global_avgpool() { return make(OpKind::global_avgpool); }
LayerDef global_maxpool() { return make(OpKind::global_maxpool); }
LayerDef batchnorm() { return make(OpKind::batchnorm); }
LayerDef relu() { return make(OpKind::relu); }
LayerDef leaky_relu(double slope) {
  LayerDef def = make(OpKind::leaky_relu);
  def.attrs.slope = slope;
  return def;
}
LayerDef gelu() { return make(OpKind::gelu); }
LayerDef silu() { return make(OpKind::silu); }
LayerDef sigmoid() { return make(OpKind::sigmoid); }
LayerDef tanh() { return make(OpKind::tanh); }
LayerDef dropout(double p) {
  LayerDef def = make(OpKind::dropout);
  def.attrs.p = p;
  return def;
}
LayerDef flatten() { return make(OpKind::flatten); }
LayerDef scale(double factor) {
  LayerDef def = make(OpKind::scale);
  def.attrs.factor = factor;
  return def;
}
LayerDef linear(std::int64_t out) {
  LayerDef def = make(OpKind::linear);
  def.attrs.out = out;
  return def;
}
LayerDef add(std::vector<std::string> inputs) { return make(OpKind::add).from(std::move(inputs)); }
LayerDef concat(std::vector<std::string> inputs) { return make(OpKind::concat).from(std::move(inputs)); }

}  // namespace layers

}  // namespace kiln
