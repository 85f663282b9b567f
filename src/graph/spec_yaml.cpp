// The YAML model spec -> GraphBuilder. Every node keeps its line and column, so each
// problem is reported where it is written; parse problems and shape problems come out
// together, in source order.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <set>
#include <sstream>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include "graph/op_def.hpp"
#include "kiln/format.hpp"
#include "kiln/spec.hpp"
#include "graph/train_yaml.hpp"
#include "graph/yaml_util.hpp"
#include "util/text.hpp"

namespace kiln {

namespace {

using detail::KeyDef;
using detail::KeyType;

// No input may hang the parser or the builder (tests/fuzz/fuzz_spec.cpp). yaml-cpp 0.7 stops
// nesting at a fixed depth (YAML::DeepRecursion), and aliases share nodes instead of copying
// them, so neither deep nor "billion laughs" YAML needs a limit here; the layer count does:
// the "did you mean" hints and the memory planner take time that grows with its square. Real
// models are far inside it: resnet20 has 60 layers, a DenseNet-264 written out about 2,000.
constexpr std::int64_t kMaxLayers = 4096;

// The blanks that begin line `line` (from 0) of `text`; empty past its end.
std::string_view indentation(std::string_view text, int line) {
  std::size_t start = 0;
  for (int i = 0; i < line; ++i) {
    start = text.find('\n', start);
    if (start == std::string_view::npos) return {};
    ++start;
  }
  std::string_view rest = text.substr(start);
  return rest.substr(0, rest.find_first_not_of(" \t"));
}

// yaml-cpp's words for a tab in the indentation ("illegal block entry", "end of map not
// found") do not mention the tab: say it when the line it points at, or the one before, has one.
// Nor do they mention a byte-order mark inside the text (files joined with cat), which yaml-cpp
// reads as a character of the line; one at the very start is legal and skipped.
std::string yaml_hint(std::string_view text, const YAML::Mark& mark) {
  for (int line : {mark.line - 1, mark.line})
    if (line >= 0 && indentation(text, line).find('\t') != std::string_view::npos)
      return "YAML does not allow tabs in indentation; indent with spaces";
  constexpr std::string_view kBom = "\xef\xbb\xbf";
  if (std::size_t at = text.find(kBom, 1); at != std::string_view::npos) {
    const auto line = std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n') + 1;
    return fmt::format("line {} holds a byte-order mark (U+FEFF), which only the first bytes of a file may; "
                       "was the file made by joining files? remove it",
                       line);
  }
  return {};
}

// The offset of the first byte of `text` that is not UTF-8 (overlong forms and surrogates
// included), or npos. YAML is UTF-8 here, and the names in a spec end up in checkpoints, whose
// JSON header must be UTF-8: without this check a bad name failed at the first checkpoint,
// after an epoch of training.
std::size_t invalid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    int more = 0;
    std::uint32_t code = 0, least = 0;
    if (c < 0x80) more = 0, code = c;
    else if ((c & 0xe0) == 0xc0) more = 1, code = c & 0x1fu, least = 0x80;
    else if ((c & 0xf0) == 0xe0) more = 2, code = c & 0x0fu, least = 0x800;
    else if ((c & 0xf8) == 0xf0) more = 3, code = c & 0x07u, least = 0x10000;
    else return i;
    for (int k = 1; k <= more; ++k) {
      if (i + static_cast<std::size_t>(k) >= text.size()) return i;
      const auto next = static_cast<unsigned char>(text[i + static_cast<std::size_t>(k)]);
      if ((next & 0xc0) != 0x80) return i;
      code = (code << 6) | (next & 0x3fu);
    }
    if (code < least || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return i;
    i += static_cast<std::size_t>(more) + 1;
  }
  return std::string_view::npos;
}

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

  // 1, [1, 2], or (where `same_allowed`) same.
  std::optional<Padding> padding(const YAML::Node& node, bool same_allowed) const {
    if (same_allowed && node.IsScalar() && node.Scalar() == "same") return Padding::same_size();
    auto pair = int_pair(node);
    if (!pair) return std::nullopt;
    return Padding::hw(pair->h, pair->w);
  }

  bool layer_key(LayerDef& def, const KeyDef& key, const YAML::Node& value, const SourceLoc& where, const std::string& layer,
                 std::string_view op);
  void layer(const YAML::Node& node, std::size_t position, GraphBuilder& builder);

  std::string file_;
  std::vector<Diagnostic> diags_;
};

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

// Writes a value read by the key's type through the key's field; false when it did not read.
template <KeyType type>
bool store(Attrs& attrs, const KeyDef& key, const std::optional<typename detail::KeyValue<type>::type>& value) {
  if (!value) return false;
  detail::write_key<type>(attrs, key, *value);
  return true;
}

std::optional<Attrs::Init> init_choice(const YAML::Node& node) {
  const std::string word = node.IsScalar() ? node.Scalar() : "";
  if (word == "default") return Attrs::Init::standard;
  if (word == "dirac") return Attrs::Init::dirac;
  if (word == "whiten") return Attrs::Init::whiten;
  return std::nullopt;
}

// Each case reads one syntax; where the value goes is the key's own field (KeyDef::field).
bool SpecParser::layer_key(LayerDef& def, const KeyDef& key, const YAML::Node& value, const SourceLoc& where,
                           const std::string& layer, std::string_view op) {
  Attrs& attrs = def.attrs;
  bool stored = false;
  switch (key.type) {
    case KeyType::integer: stored = store<KeyType::integer>(attrs, key, integer(value)); break;
    case KeyType::int_pair: stored = store<KeyType::int_pair>(attrs, key, int_pair(value)); break;
    case KeyType::padding: stored = store<KeyType::padding>(attrs, key, padding(value, true)); break;
    case KeyType::pool_pad: stored = store<KeyType::pool_pad>(attrs, key, padding(value, false)); break;
    case KeyType::boolean: stored = store<KeyType::boolean>(attrs, key, detail::yaml_bool(value)); break;
    case KeyType::number: stored = store<KeyType::number>(attrs, key, detail::yaml_number(value)); break;
    case KeyType::choice: stored = store<KeyType::choice>(attrs, key, init_choice(value)); break;
    case KeyType::names: break;  // `from` is read by layer() into LayerDef::inputs
  }
  if (!stored)
    error(where, fmt::format("'{}' must be {}, got {}", key.name, expected(key.type), show(value)), {}, layer, std::string(op));
  return stored;
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
  if (opdef.has_params) {
    const auto param_keys = detail::param_keys();
    keys.insert(keys.end(), param_keys.begin(), param_keys.end());
  }
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
  // UTF-16 and UTF-32 (with their byte-order marks) are YAML too; yaml-cpp converts them.
  const bool utf8 = !text.starts_with("\xff\xfe") && !text.starts_with("\xfe\xff") && !text.starts_with(std::string_view("\0\0", 2));
  if (std::size_t bad = utf8 ? invalid_utf8(text) : std::string_view::npos; bad != std::string_view::npos) {
    const std::string_view before = text.substr(0, bad);
    const std::size_t newline = before.rfind('\n');
    const std::size_t column = newline == std::string_view::npos ? bad : bad - newline - 1;
    error({file_, static_cast<int>(std::count(before.begin(), before.end(), '\n')) + 1, static_cast<int>(column) + 1},
          fmt::format("invalid YAML: byte 0x{:02x} is not UTF-8", static_cast<unsigned char>(text[bad])),
          "save the file as UTF-8");
    throw GraphError(diags_);
  }
  YAML::Node loaded;
  try {
    loaded = YAML::Load(std::string(text));
  } catch (const YAML::DeepRecursion& e) {
    error(loc(e.mark), fmt::format("invalid YAML: lists and mappings nest too deeply (the parser stops at depth {})", e.depth()),
          "a model spec nests a few levels: layers is a list of mappings of numbers and short lists");
    throw GraphError(diags_);
  } catch (const YAML::Exception& e) {
    error(loc(e.mark), fmt::format("invalid YAML: {}", e.msg), yaml_hint(text, e.mark));
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
  } else if (static_cast<std::int64_t>(layers.size()) > kMaxLayers) {
    error(loc(layers), fmt::format("'layers' lists {} layers; kiln builds models of at most {}",
                                   format_count(static_cast<std::int64_t>(layers.size())), format_count(kMaxLayers)));
    throw GraphError(diags_);
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
  const auto status = std::filesystem::status(path, ec);
  if (std::filesystem::is_directory(status)) fail("is a directory, not a model spec", "name a .yaml file, e.g. data/models/cifar_quick.yaml");
  // Opening a FIFO would wait for a writer forever (`kiln check` hung on one).
  if (std::filesystem::exists(status) && !std::filesystem::is_regular_file(status))
    fail("cannot read the model spec: not a regular file", "name a .yaml file, e.g. data/models/cifar_quick.yaml");
  std::ifstream file(path, std::ios::binary);
  if (!file) fail(fmt::format("cannot read the model spec: {}", std::strerror(errno)), "check the path, e.g. data/models/cifar_quick.yaml");
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) fail(fmt::format("cannot read the model spec: {}", std::strerror(errno)));
  return parse_spec(text.str(), path);
}

}  // namespace kiln
