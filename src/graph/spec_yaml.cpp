// The YAML model spec -> GraphBuilder. Every node keeps its line and column, so each
// problem is reported where it is written; parse problems and shape problems come out
// together, in source order.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <set>
#include <sstream>
#include <yaml-cpp/yaml.h>

#include "graph/op_def.hpp"
#include "kiln/spec.hpp"
#include "graph/train_yaml.hpp"
#include "graph/yaml_util.hpp"
#include "util/text.hpp"

namespace kiln {

namespace {

using detail::KeyDef;
using detail::KeyType;

class SpecParser {
 public:
  SpecParser(std::string file) : file_(std::move(file)) {}

  Spec parse(std::string_view text);

 private:
  SourceLoc loc(const YAML::Node& node) const { return detail::yaml_loc(node, file_); }
  SourceLoc loc(const YAML::Mark& m) const { return {file_, m.line + 1, m.column + 1}; }

  void error(SourceLoc where, std::string message, std::string hint = {}, std::string layer = {}, std::string context = {}) {
    Diagnostic d;
    d.loc = std::move(where);
    d.layer = std::move(layer);
    d.context = std::move(context);
    d.message = std::move(message);
    d.hint = std::move(hint);
    diags_.push_back(std::move(d));
  }

  static std::string show(const YAML::Node& node) { return detail::yaml_show(node); }
  static std::optional<std::int64_t> integer(const YAML::Node& node) { return detail::yaml_integer(node); }

  std::optional<Hw> int_pair(const YAML::Node& node) const {
    if (auto v = integer(node)) return Hw{*v, *v};
    if (node.IsSequence() && node.size() == 2) {
      auto h = integer(node[0]), w = integer(node[1]);
      if (h && w) return Hw{*h, *w};
    }
    return std::nullopt;
  }

  bool layer_key(LayerDef& def, const KeyDef& key, const YAML::Node& value, const SourceLoc& where, const std::string& layer,
                 std::string_view op);
  void layer(const YAML::Node& node, std::size_t position, GraphBuilder& builder);

  std::string file_;
  std::vector<Diagnostic> diags_;
};

constexpr KeyDef kParamKeys[] = {{"frozen", KeyType::boolean}, {"lr_scale", KeyType::number}, {"train_epochs", KeyType::number}};

const char* expected(KeyType type) {
  switch (type) {
    case KeyType::integer: return "an integer";
    case KeyType::int_pair: return "an integer or a list [h, w]";
    case KeyType::padding: return "an integer, a list [h, w], or same";
    case KeyType::pool_pad: return "an integer or a list [h, w]";
    case KeyType::boolean: return "true or false";
    case KeyType::number: return "a number";
    case KeyType::names: return "a layer name or a list of layer names";
    case KeyType::choice: return "one of default, dirac, whiten";
  }
  return "?";
}

bool SpecParser::layer_key(LayerDef& def, const KeyDef& key, const YAML::Node& value, const SourceLoc& where,
                           const std::string& layer, std::string_view op) {
  Attrs& a = def.attrs;
  auto fail = [&] {
    error(where, fmt::format("'{}' must be {}, got {}", key.name, expected(key.type), show(value)), {}, layer, std::string(op));
    return false;
  };
  switch (key.type) {
    case KeyType::integer: {
      auto v = integer(value);
      if (!v) return fail();
      if (key.name == "out") a.out = *v;
      else if (key.name == "groups") a.groups = *v;
      else a.in = *v;  // conv/linear `in`, batchnorm `features`
      return true;
    }
    case KeyType::int_pair: {
      auto v = int_pair(value);
      if (!v) return fail();
      if (key.name == "kernel") a.kernel = *v;
      else if (key.name == "stride") a.stride = *v;
      else a.dilation = *v;
      return true;
    }
    case KeyType::padding:
      if (value.IsScalar() && value.Scalar() == "same") {
        a.pad = Padding::same_size();
        return true;
      }
      [[fallthrough]];
    case KeyType::pool_pad: {
      auto v = int_pair(value);
      if (!v) return fail();
      a.pad = Padding::hw(v->h, v->w);
      return true;
    }
    case KeyType::boolean: {
      auto parsed = detail::yaml_bool(value);
      if (!parsed) return fail();
      bool b = *parsed;
      if (key.name == "bias") a.bias = b;
      else if (key.name == "ceil") a.ceil = b;
      else if (key.name == "weight") a.weight = b;
      else a.frozen = b;
      return true;
    }
    case KeyType::number: {
      auto v = detail::yaml_number(value);
      if (!v) return fail();
      if (key.name == "eps") a.eps = *v;
      else if (key.name == "momentum") a.momentum = *v;
      else if (key.name == "slope") a.slope = *v;
      else if (key.name == "p") a.p = *v;
      else if (key.name == "factor") a.factor = *v;
      else if (key.name == "train_epochs") a.train_epochs = *v;
      else a.lr_scale = *v;
      return true;
    }
    case KeyType::choice: {
      const std::string word = value.IsScalar() ? value.Scalar() : "";
      if (word == "default") a.init = Attrs::Init::standard;
      else if (word == "dirac") a.init = Attrs::Init::dirac;
      else if (word == "whiten") a.init = Attrs::Init::whiten;
      else return fail();
      return true;
    }
    case KeyType::names: return fail();
  }
  return fail();
}

void SpecParser::layer(const YAML::Node& node, std::size_t position, GraphBuilder& builder) {
  LayerDef def;
  def.loc = loc(node);
  if (!node.IsMap()) {
    error(def.loc, fmt::format("layer {} must be a mapping like {{op: relu}}, got {}", position, show(node)));
    def.invalid = true;
    builder.add(std::move(def));
    return;
  }
  // The name first, so that every later message names the layer.
  std::string name;
  if (const auto n = node["name"]; n && n.IsScalar() && !n.Scalar().empty()) name = n.Scalar();

  const auto op_node = node["op"];
  std::string shown = name.empty() ? fmt::format("#{}", position) : name;
  if (!op_node) {
    error(def.loc, "has no 'op'", fmt::format("give it an op, one of: {}", fmt::join(op_names(), ", ")), shown);
    def.invalid = true;
    def.name = name;
    builder.add(std::move(def));
    return;
  }
  auto op = op_node.IsScalar() ? op_from_name(op_node.Scalar()) : std::nullopt;
  if (!op) {
    std::string guess = op_node.IsScalar() ? detail::closest(op_node.Scalar(), op_names()) : "";
    error(loc(op_node), fmt::format("unknown op {}", show(op_node)),
          guess.empty() ? fmt::format("ops are: {}", fmt::join(op_names(), ", ")) : fmt::format("did you mean '{}'?", guess),
          shown);
    def.invalid = true;
    def.name = name;
    builder.add(std::move(def));
    return;
  }
  def.op = *op;
  const auto& opdef = detail::op_def(*op);
  if (name.empty()) name = fmt::format("{}{}", opdef.name, position);
  def.name = name;
  std::string context(opdef.name);

  std::vector<KeyDef> keys(opdef.keys.begin(), opdef.keys.end());
  if (opdef.has_params) keys.insert(keys.end(), std::begin(kParamKeys), std::end(kParamKeys));
  std::vector<std::string_view> known{"name", "op", "from"};
  for (const auto& k : keys) known.push_back(k.name);

  std::set<std::string> seen;
  for (const auto& kv : node) {
    const YAML::Node& key = kv.first;
    const YAML::Node& value = kv.second;
    std::string k = key.IsScalar() ? key.Scalar() : "";
    SourceLoc where = loc(key);
    if (!seen.insert(k).second) {
      error(where, fmt::format("key '{}' appears twice", k), "keep one of them", name, context);
      def.invalid = true;
      continue;
    }
    if (k == "op") continue;
    if (k == "name") {
      if (!value.IsScalar() || value.Scalar().empty()) {
        error(where, fmt::format("'name' must be a non-empty string, got {}", show(value)), {}, name, context);
        def.invalid = true;
      }
      continue;
    }
    if (k == "from") {
      if (value.IsScalar() && !value.Scalar().empty()) {
        def.inputs = {value.Scalar()};
      } else if (value.IsSequence() && value.size() > 0) {
        for (const auto& item : value) {
          if (!item.IsScalar()) {
            error(loc(item), fmt::format("'from' must list layer names, got {}", show(item)), {}, name, context);
            def.invalid = true;
            break;
          }
          def.inputs.push_back(item.Scalar());
        }
      } else {
        error(where, fmt::format("'from' must be {}, got {}", expected(KeyType::names), show(value)), {}, name, context);
        def.invalid = true;
      }
      continue;
    }
    auto it = std::find_if(keys.begin(), keys.end(), [&](const KeyDef& d) { return d.name == k; });
    if (it == keys.end()) {
      std::string guess = detail::closest(k, known);
      std::string hint = guess.empty() ? fmt::format("{} takes: {}", opdef.name, fmt::join(known.begin() + 3, known.end(), ", "))
                                       : fmt::format("did you mean '{}'?", guess);
      if (guess.empty() && keys.empty()) hint = fmt::format("{} takes no options besides name and from", opdef.name);
      error(where, fmt::format("unknown key '{}' for op {}", k, opdef.name), hint, name, context);
      def.invalid = true;
      continue;
    }
    if (!layer_key(def, *it, value, loc(value), name, context)) def.invalid = true;
  }
  for (const auto& k : keys) {
    if (!k.required || seen.count(std::string(k.name))) continue;
    std::vector<std::string_view> required;
    for (const auto& r : keys)
      if (r.required) required.push_back(r.name);
    error(def.loc, fmt::format("missing required key '{}'", k.name),
          fmt::format("{} needs: {}", opdef.name, fmt::join(required, ", ")), name, context);
    def.invalid = true;
  }
  builder.add(std::move(def));
}

Spec SpecParser::parse(std::string_view text) {
  YAML::Node loaded;
  try {
    loaded = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    error(loc(e.mark), fmt::format("invalid YAML: {}", e.msg));
    throw GraphError(diags_);
  }
  const YAML::Node& root = loaded;  // const: lookups must not insert keys
  SourceLoc file_loc{file_, 0, 0};
  if (!root.IsMap()) {
    error(root.IsDefined() && !root.IsNull() ? loc(root) : file_loc,
          "a model spec must be a YAML mapping with the keys name, input, classes, layers (and optionally train)",
          "see data/models/cifar_quick.yaml");
    throw GraphError(diags_);
  }

  const std::vector<std::string_view> top_keys{"name", "input", "classes", "layers", "train"};
  std::set<std::string> seen;
  for (const auto& kv : root) {
    std::string k = kv.first.IsScalar() ? kv.first.Scalar() : "";
    if (!seen.insert(k).second) error(loc(kv.first), fmt::format("key '{}' appears twice", k), "keep one of them");
    if (std::find(top_keys.begin(), top_keys.end(), k) != top_keys.end()) continue;
    std::string guess = detail::closest(k, top_keys);
    error(loc(kv.first), fmt::format("unknown key '{}' in the model spec", k),
          guess.empty() ? "a model spec has name, input, classes, layers and train" : fmt::format("did you mean '{}'?", guess));
  }

  std::string name = std::filesystem::path(file_).stem().string();
  if (const auto n = root["name"]) {
    if (n.IsScalar() && !n.Scalar().empty()) name = n.Scalar();
    else error(loc(n), fmt::format("'name' must be a non-empty string, got {}", show(n)));
  }

  std::vector<std::int64_t> input;
  SourceLoc input_loc = file_loc;
  const auto in = root["input"];
  if (!in) {
    error(file_loc, "missing required key 'input'", "e.g. input: [3, 32, 32] (channels, height, width of one sample)");
  } else {
    input_loc = loc(in);
    bool ok = in.IsSequence();
    if (ok)
      for (const auto& d : in) {
        auto v = integer(d);
        if (!v) {
          ok = false;
          break;
        }
        input.push_back(*v);
      }
    if (!ok) {
      error(input_loc, fmt::format("'input' must be a list of integers [C, H, W], got {}", show(in)),
            "e.g. input: [3, 32, 32] for CIFAR-10");
      input.clear();  // the builder then skips everything that reads the input
    }
  }

  std::int64_t classes = 10;
  SourceLoc classes_loc = file_loc;
  if (const auto c = root["classes"]) {
    classes_loc = loc(c);
    if (auto v = integer(c)) classes = *v;
    else error(classes_loc, fmt::format("'classes' must be an integer, got {}", show(c)), "e.g. classes: 10 for CIFAR-10");
  }

  GraphBuilder builder(name, input, classes);
  builder.set_source({file_, 0, 0}, input_loc, classes_loc);
  const auto layers = root["layers"];
  if (!layers) {
    error(file_loc, "missing required key 'layers'", "list the layers, e.g. layers: [{op: flatten}, {op: linear, out: 10}]");
  } else if (!layers.IsSequence()) {
    error(loc(layers), fmt::format("'layers' must be a list of layers, got {}", show(layers)));
  } else {
    std::size_t position = 1;
    for (const auto& node : layers) layer(node, position++, builder);
  }

  TrainConfig train;
  if (const auto t = root["train"]) train = detail::parse_train_section(t, file_, diags_);

  for (auto& d : diags_) builder.report(std::move(d));
  Graph graph = builder.build();
  return Spec{std::move(graph), file_, std::move(train)};
}

}  // namespace

Spec parse_spec(std::string_view yaml, const std::string& file) { return SpecParser(file).parse(yaml); }

Spec load_spec(const std::string& path) {
  auto fail = [&](std::string message, std::string hint = {}) {
    Diagnostic d;
    d.loc.file = path;
    d.message = std::move(message);
    d.hint = std::move(hint);
    throw GraphError({d});
  };
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail("is a directory, not a model spec", "name a .yaml file, e.g. data/models/cifar_quick.yaml");
  std::ifstream file(path, std::ios::binary);
  if (!file) fail(fmt::format("cannot read the model spec: {}", std::strerror(errno)), "check the path, e.g. data/models/cifar_quick.yaml");
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) fail(fmt::format("cannot read the model spec: {}", std::strerror(errno)));
  return parse_spec(text.str(), path);
}

}  // namespace kiln
