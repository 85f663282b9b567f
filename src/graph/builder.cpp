// GraphBuilder::build(): resolves inputs, runs every shape rule, reports every problem in
// one pass. A layer downstream of a failed one is skipped silently, so one mistake gives
// one diagnostic.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <map>

#include "graph/graph_data.hpp"
#include "graph/op_def.hpp"
#include "util/checked.hpp"
#include "util/text.hpp"

namespace kiln {

using detail::checked_add;
using detail::checked_product;

struct GraphBuilder::State {
  std::string name;
  std::vector<std::int64_t> input;
  std::int64_t classes = 0;
  std::vector<LayerDef> defs;
  std::vector<Diagnostic> reported;
  SourceLoc model_loc, input_loc, classes_loc;
};

GraphBuilder::GraphBuilder(std::string name, std::vector<std::int64_t> input, std::int64_t classes)
    : state_(std::make_unique<State>()) {
  state_->name = std::move(name);
  state_->input = std::move(input);
  state_->classes = classes;
}

GraphBuilder::GraphBuilder(std::string name, Shape input, std::int64_t classes)
    : GraphBuilder(std::move(name),
                   input.is_image() ? std::vector<std::int64_t>{input.c, input.h, input.w} : std::vector<std::int64_t>{input.c},
                   classes) {}

GraphBuilder::~GraphBuilder() = default;
GraphBuilder::GraphBuilder(GraphBuilder&&) noexcept = default;
GraphBuilder& GraphBuilder::operator=(GraphBuilder&&) noexcept = default;

GraphBuilder& GraphBuilder::add(LayerDef layer) {
  state_->defs.push_back(std::move(layer));
  return *this;
}

void GraphBuilder::set_source(SourceLoc model, SourceLoc input, SourceLoc classes) {
  state_->model_loc = std::move(model);
  state_->input_loc = std::move(input);
  state_->classes_loc = std::move(classes);
}

void GraphBuilder::report(Diagnostic diagnostic) { state_->reported.push_back(std::move(diagnostic)); }

namespace {

// Dimensions, kernels, strides and channel counts beyond int32 are certainly mistakes, and
// capping them keeps every sum of two of them inside int64.
constexpr std::int64_t kMaxValue = std::numeric_limits<std::int32_t>::max();

Diagnostic model_error(const SourceLoc& loc, std::string message, std::string hint = {}) {
  Diagnostic d;
  d.loc = loc;
  d.message = std::move(message);
  d.hint = std::move(hint);
  return d;
}

std::string dims_text(const std::vector<std::int64_t>& dims) {
  std::string out = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

bool check_limits(detail::ShapeCtx& ctx) {
  const Attrs& a = ctx.layer.attrs;
  Hw stride = a.stride.value_or(Hw{1, 1});
  std::pair<const char*, std::int64_t> values[] = {
      {"out", a.out},           {"kernel", a.kernel.h},     {"kernel", a.kernel.w},  {"stride", stride.h},
      {"stride", stride.w},     {"pad", a.pad.top},         {"pad", a.pad.bottom},   {"pad", a.pad.left},
      {"pad", a.pad.right},     {"dilation", a.dilation.h}, {"dilation", a.dilation.w}, {"groups", a.groups},
      {"in", a.in.value_or(0)},
  };
  for (auto [key, v] : values) {
    if (v <= kMaxValue && v >= -kMaxValue) continue;
    ctx.error(fmt::format("{} is {}, beyond the largest supported value {}", key, v, kMaxValue));
    return false;
  }
  return true;
}

// Resolves a LayerDef's `from:` names to earlier layers; reports unknown and forward names.
bool resolve_inputs(const LayerDef& def, Layer& layer, const std::map<std::string, int>& index,
                    const std::vector<std::string>& all_names, std::vector<Diagnostic>& diags) {
  const auto& op = detail::op_def(def.op);
  auto report = [&](std::string message, std::string hint = {}) {
    Diagnostic d;
    d.loc = def.loc;
    d.layer = layer.name;
    d.context = std::string(op.name);
    d.message = std::move(message);
    d.hint = std::move(hint);
    diags.push_back(std::move(d));
  };
  if (def.inputs.empty()) {
    if (op.min_inputs > 1) {
      report(fmt::format("{} needs at least {} inputs named in from:, got none", op.name, op.min_inputs),
             fmt::format("e.g. from: [{}, input]", layer.index > 1 ? all_names[static_cast<std::size_t>(layer.index - 2)] : "input"));
      return false;
    }
    layer.inputs = {layer.index - 1};
    return true;
  }
  bool ok = true;
  for (const auto& name : def.inputs) {
    if (name == "input") {
      layer.inputs.push_back(0);
      continue;
    }
    auto it = index.find(name);
    if (it != index.end() && it->second < layer.index) {
      layer.inputs.push_back(it->second);
      continue;
    }
    ok = false;
    if (name == layer.name) {
      report(fmt::format("takes its input from itself ('{}')", name), "from: must name an earlier layer, or input");
      continue;
    }
    auto later = std::find(all_names.begin() + layer.index, all_names.end(), name);
    if (later != all_names.end()) {
      report(fmt::format("takes its input from '{}', which is defined later (layer {}); inputs must come from earlier layers",
                         name, later - all_names.begin() + 1),
             "move this layer after it, or name an earlier layer");
      continue;
    }
    std::vector<std::string_view> candidates{"input"};
    for (int i = 0; i + 1 < layer.index; ++i) candidates.push_back(all_names[static_cast<std::size_t>(i)]);
    std::string guess = detail::closest(name, candidates);
    report(fmt::format("takes its input from '{}', which is not defined", name),
           guess.empty() ? "from: must name an earlier layer, or input" : fmt::format("did you mean '{}'?", guess));
  }
  if (!ok) return false;
  auto n = static_cast<int>(layer.inputs.size());
  if (n < op.min_inputs || n > op.max_inputs) {
    if (op.max_inputs == 1)
      report(fmt::format("{} takes one input, but from: names {}", op.name, n),
             "use add or concat to combine several tensors");
    else if (op.min_inputs == op.max_inputs)
      report(fmt::format("{} takes exactly {} inputs, but from: names {}", op.name, op.min_inputs, n));
    else if (n > op.max_inputs)
      report(fmt::format("{} takes at most {} inputs, but from: names {}", op.name, op.max_inputs, n));
    else
      report(fmt::format("{} needs at least {} inputs, but from: names {}", op.name, op.min_inputs, n));
    return false;
  }
  return true;
}

}  // namespace

Graph GraphBuilder::build() const {
  const State& s = *state_;
  std::vector<Diagnostic> diags = s.reported;
  auto data = std::make_shared<Graph::Data>();
  data->name = s.name;
  data->source = s.model_loc.file;
  data->classes = s.classes;

  // Layer 0: the model input.
  // The spec parser leaves the input empty (and has said why) when it could not read it.
  const bool parser_failed = !s.reported.empty();
  bool input_ok = s.input.size() == 3 &&
                  std::all_of(s.input.begin(), s.input.end(), [](std::int64_t d) { return d >= 1 && d <= kMaxValue; });
  if (s.input.empty() && parser_failed) {
    // already reported
  } else if (s.input.size() != 3) {
    diags.push_back(model_error(s.input_loc,
                                fmt::format("input must be [C, H, W] (channels, height, width of one sample), got {} with {} "
                                            "number{}",
                                            dims_text(s.input), s.input.size(), s.input.size() == 1 ? "" : "s"),
                                "e.g. input: [3, 32, 32] for CIFAR-10; the batch dimension is not part of it"));
  } else if (!input_ok) {
    diags.push_back(model_error(s.input_loc,
                                fmt::format("input sizes must be between 1 and {}, got {}", kMaxValue, dims_text(s.input)),
                                "e.g. input: [3, 32, 32] for CIFAR-10"));
  } else if (!checked_product({s.input[0], s.input[1], s.input[2]})) {
    input_ok = false;
    diags.push_back(model_error(s.input_loc, fmt::format("input {} has more elements than fit in 64 bits", dims_text(s.input))));
  }
  if (s.classes < 1 || s.classes > kMaxValue)
    diags.push_back(model_error(s.classes_loc, fmt::format("classes must be between 1 and {}, got {}", kMaxValue, s.classes)));
  if (s.defs.empty() && !parser_failed)
    diags.push_back(model_error(s.model_loc, "the model has no layers", "list them under layers:, ending with a linear layer"));

  Layer input;
  input.index = 0;
  input.name = "input";
  input.op = OpKind::input;
  input.loc = s.input_loc;
  if (input_ok) input.shape = Shape::chw(s.input[0], s.input[1], s.input[2]);
  data->input = input.shape;
  data->layers.push_back(std::move(input));

  std::vector<bool> failed{!input_ok};
  std::map<std::string, int> index{{"input", 0}};
  std::vector<std::string> names;
  for (std::size_t k = 0; k < s.defs.size(); ++k) {
    const LayerDef& def = s.defs[k];
    names.push_back(def.name.empty() ? fmt::format("{}{}", detail::op_def(def.op).name, k + 1) : def.name);
  }

  for (std::size_t k = 0; k < s.defs.size(); ++k) {
    const LayerDef& def = s.defs[k];
    const auto& op = detail::op_def(def.op);
    Layer layer;
    layer.index = static_cast<int>(k + 1);
    layer.name = names[k];
    layer.op = def.op;
    layer.attrs = def.attrs;
    layer.loc = def.loc;
    layer.instance = def.instance;
    layer.block = def.block;
    bool ok = !def.invalid;

    auto [it, fresh] = index.emplace(layer.name, layer.index);
    if (!fresh) {
      Diagnostic d;
      d.loc = def.loc;
      d.layer = layer.name;
      d.context = std::string(op.name);
      if (layer.name == "input") {
        d.message = "the name 'input' is reserved for the model input";
        d.hint = "choose another name";
      } else {
        const Layer& first = data->layers[static_cast<std::size_t>(it->second)];
        d.message = fmt::format("duplicate layer name; '{}' is already layer {}", layer.name, it->second);
        if (first.loc.known()) d.notes.push_back(fmt::format("first defined at {}:{}:{}", first.loc.file, first.loc.line, first.loc.column));
        d.hint = "give every layer a unique name";
      }
      diags.push_back(std::move(d));
      ok = false;
    }
    if (ok && !def.invalid) {
      ok = resolve_inputs(def, layer, index, names, diags);
    } else if (def.invalid) {
      // Its inputs still count as read, so the layer before a broken one is not called unused.
      std::vector<Diagnostic> ignored;
      resolve_inputs(def, layer, index, names, ignored);
      ok = false;
    }
    for (int in : layer.inputs)
      if (failed[static_cast<std::size_t>(in)]) ok = false;

    detail::ShapeCtx ctx{layer, data->layers, diags};
    if (ok) ok = check_limits(ctx);
    if (ok) {
      auto shape = op.infer(ctx);
      ok = shape.has_value();
      if (ok) layer.shape = *shape;
    }
    if (ok && !checked_product({layer.shape.c, layer.shape.h, layer.shape.w})) {
      ctx.error(fmt::format("output {} has more elements than fit in 64 bits", layer.shape.str()));
      ok = false;
    }
    if (ok && op.has_params) {
      const Attrs& a = layer.attrs;
      if (!(a.lr_scale >= 0 && std::isfinite(a.lr_scale)))
        ok = false, ctx.error(fmt::format("lr_scale must be a finite number >= 0, got {}", a.lr_scale));
      if (a.train_epochs && !(*a.train_epochs > 0 && std::isfinite(*a.train_epochs)))
        ok = false, ctx.error(fmt::format("train_epochs must be positive, got {}", *a.train_epochs));
    }
    if (ok) {
      std::vector<Param> params;
      if (op.params) op.params(layer, data->layers, params);
      for (auto& p : params) {
        auto n = std::optional<std::int64_t>{1};
        for (auto d : p.dims) n = n ? detail::checked_mul(*n, d) : n;
        if (!n) {
          ctx.error(fmt::format("parameter '{}' has more elements than fit in 64 bits", p.name));
          ok = false;
          break;
        }
        p.elements = *n;
        if (layer.attrs.frozen) p.trainable = false;
        layer.params.push_back(static_cast<int>(data->params.size()));
        data->params.push_back(std::move(p));
      }
      auto f = op.flops(layer, data->layers);
      if (!f) {
        ctx.error("its FLOP count overflows 64 bits");
        ok = false;
      } else {
        layer.flops = *f;
      }
    }
    failed.push_back(!ok);
    data->layers.push_back(std::move(layer));
  }

  for (const Layer& layer : data->layers)
    for (int in : layer.inputs) {
      auto& consumers = data->layers[static_cast<std::size_t>(in)].consumers;
      if (consumers.empty() || consumers.back() != layer.index) consumers.push_back(layer.index);
    }

  if (!s.defs.empty() && !failed.back()) {
    const Layer& last = data->layers.back();
    if (last.shape != Shape::vec(s.classes) && s.classes >= 1) {
      Diagnostic d;
      d.loc = last.loc;
      d.layer = last.name;
      d.context = detail::describe_layer(last, false);
      d.message = fmt::format("the model's output must be a vector of {} class logits (classes: {}), but this last layer "
                              "produces {}",
                              s.classes, s.classes, last.shape.is_image() ? last.shape.str() : last.shape.str() + " features");
      d.hint = last.shape.is_image() ? fmt::format("end the model with {{op: flatten}} and {{op: linear, out: {}}}", s.classes)
                                     : fmt::format("end the model with {{op: linear, out: {}}}", s.classes);
      diags.push_back(std::move(d));
    }
  }

  for (std::size_t i = 1; i + 1 < data->layers.size(); ++i) {
    const Layer& layer = data->layers[i];
    if (!layer.consumers.empty() || failed[i]) continue;
    Diagnostic d;
    d.severity = Severity::warning;
    d.loc = layer.loc;
    d.layer = layer.name;
    d.context = detail::describe_layer(layer, false);
    d.message = "its output is never used";
    d.hint = "remove it, or name it in a later layer's from:";
    data->warnings.push_back(std::move(d));
  }

  // A layer of a block instance: every diagnostic about it says which instance (the parser's
  // own diagnostics already do).
  std::map<std::string_view, const LayerDef*> with_notes;
  for (std::size_t k = 0; k < s.defs.size(); ++k)
    if (!s.defs[k].notes.empty()) with_notes.emplace(names[k], &s.defs[k]);
  if (!with_notes.empty()) {
    auto add_notes = [&](Diagnostic& d) {
      auto it = with_notes.find(d.layer);
      if (it != with_notes.end()) d.notes.insert(d.notes.end(), it->second->notes.begin(), it->second->notes.end());
    };
    for (std::size_t i = s.reported.size(); i < diags.size(); ++i) add_notes(diags[i]);
    for (auto& w : data->warnings) add_notes(w);
  }

  auto by_position = [](const Diagnostic& a, const Diagnostic& b) {
    return std::tie(a.loc.line, a.loc.column) < std::tie(b.loc.line, b.loc.column);
  };
  bool has_error = std::any_of(diags.begin(), diags.end(), [](const Diagnostic& d) { return d.severity == Severity::error; });
  if (has_error) {
    diags.insert(diags.end(), data->warnings.begin(), data->warnings.end());
    std::stable_sort(diags.begin(), diags.end(), by_position);
    throw GraphError(std::move(diags));
  }
  for (auto& d : diags) data->warnings.push_back(std::move(d));
  std::stable_sort(data->warnings.begin(), data->warnings.end(), by_position);

  for (const Param& p : data->params)
    if (!p.buffer) data->parameter_count += p.elements;
  for (const Layer& layer : data->layers) {
    auto total = checked_add(data->flops, layer.flops);
    data->flops = total.value_or(std::numeric_limits<std::int64_t>::max());
  }
  return Graph(std::move(data));
}

}  // namespace kiln
