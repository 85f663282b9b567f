// The YAML model spec -> GraphBuilder. Every node keeps its line and column, so each
// problem is reported where it is written; parse problems and shape problems come out
// together, in source order.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>
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

// A block of the spec's `blocks:` map: parameters with their defaults and a list of layers.
struct BlockDef {
  std::string name;
  SourceLoc loc;
  YAML::Node layers;  // unset when the definition was wrong (reported): its uses expand to nothing
  bool valid = false;
  mutable bool used = false;  // some layer line names it (else: a warning)
  /// In the order written; nullopt: no default (an instance must give it).
  std::vector<std::pair<std::string, std::optional<std::string>>> params;
};

// Where a layer is being read: the top level, or one block instance (nested ones point to
// the instance that uses them).
struct Scope {
  Scope* parent = nullptr;
  const BlockDef* block = nullptr;  // nullptr: the top level
  std::string path;                 // "layer2.0"; empty for an instance without a name
  std::string prefix;               // what the names of its layers begin with ("layer2.0.")
  SourceLoc at;                     // the line that instantiates it
  std::vector<std::pair<std::string, std::string>> params;  // every parameter's value, in the block's order
  std::string input;                // ${in}: the full name of the instance's input
  // Local name -> full name of the layers and instances declared so far; an instance
  // without a name shares its parent's.
  std::map<std::string, std::string>* locals = nullptr;
  bool at_start = true;             // nothing emitted yet: the next layer without from: reads `input`
  std::string fold, fold_block;     // the outermost instance (LayerDef::instance, ::block)
};

// A name that can go into a checkpoint's JSON header and a terminal: UTF-8 without control
// characters. yaml-cpp turns some bytes of a malformed file (a NUL inside a flow mapping)
// into text that is not UTF-8, after the file as a whole was checked.
bool printable_name(std::string_view name) {
  return invalid_utf8(name) == std::string_view::npos &&
         std::none_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
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
    d.notes = scope_notes(scope_);
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
  void layer_list(const YAML::Node& list, Scope& scope, GraphBuilder& builder);
  void layer(const YAML::Node& node, std::size_t position, Scope& scope, GraphBuilder& builder);

  // Blocks (README "Blocks").
  void read_blocks(const YAML::Node& node);
  void instance(const YAML::Node& node, std::size_t position, Scope& scope, GraphBuilder& builder);
  std::vector<std::string> scope_notes(const Scope* scope) const;
  std::optional<std::string> substitute(const std::string& text, const Scope& scope, const SourceLoc& where,
                                        const std::string& layer);
  std::optional<std::string> param_value(std::string_view expr, const Scope& scope, const SourceLoc& where,
                                         const std::string& layer);
  YAML::Node resolved(const YAML::Node& node, const Scope& scope, const SourceLoc& where, const std::string& layer, bool& ok);
  std::optional<std::string> input_name(const YAML::Node& item, const Scope& scope, const std::string& layer,
                                        const std::string& context);
  void emitted(Scope& scope, const std::string& full_name);

  std::string file_;
  std::vector<Diagnostic> diags_;
  std::map<std::string, BlockDef> blocks_;
  Scope* scope_ = nullptr;                   // where error() is said to happen
  std::vector<std::string> expanding_;       // the blocks being expanded, outermost first
  std::string last_;                         // the full name of the last layer added ("input" before any)
  std::set<std::string> layer_names_;        // every full layer name added
  std::map<std::string, std::string> aliases_;  // full instance path -> full name of its output
  std::int64_t expanded_ = 0;                // layers and instances read, against kMaxLayers
  bool too_many_ = false;                    // reported that the expansion exceeds kMaxLayers
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

void SpecParser::layer_list(const YAML::Node& list, Scope& scope, GraphBuilder& builder) {
  std::size_t position = 1;
  for (const auto& node : list) {
    if (++expanded_ > kMaxLayers) {
      if (!too_many_)
        error(loc(node), fmt::format("the model expands to more than {} layers and block instances; kiln builds models of at most {}",
                                     format_count(kMaxLayers), format_count(kMaxLayers)),
              "check the repeat: counts");
      too_many_ = true;
      return;
    }
    if (node.IsMap() && node["block"]) instance(node, position++, scope, builder);
    else layer(node, position++, scope, builder);
  }
}

// A layer is added: the scope and the instances around it have started, and its local name
// (set by the caller) is known.
void SpecParser::emitted(Scope& scope, const std::string& full_name) {
  for (Scope* s = &scope; s; s = s->parent) s->at_start = false;
  last_ = full_name;
  layer_names_.insert(full_name);
}

void SpecParser::layer(const YAML::Node& node, std::size_t position, Scope& scope, GraphBuilder& builder) {
  scope_ = &scope;
  LayerDef def;
  def.loc = loc(node);
  def.notes = scope_notes(&scope);
  def.instance = scope.fold;
  def.block = scope.fold_block;
  // Adds the layer under `local` (the name without the instance's prefix).
  auto add = [&](const std::string& local) {
    def.name = scope.prefix + local;
    if (scope.block) (*scope.locals)[local] = def.name;
    if (aliases_.count(def.name))
      error(def.loc, fmt::format("the layer name '{}' is also the name of a block instance", def.name),
            "give the layer or the instance another name", def.name), def.invalid = true;
    // A layer of an instance without from: reads the instance's input.
    if (def.inputs.empty() && scope.block && scope.at_start) def.inputs = {scope.input};
    emitted(scope, def.name);
    builder.add(std::move(def));
  };
  if (!node.IsMap()) {
    error(def.loc, fmt::format("layer {} must be a mapping like {{op: relu}}, got {}", position, show(node)));
    def.invalid = true;
    add(fmt::format("#{}", position));
    return;
  }
  // The name first, so that every later message names the layer.
  std::string name;
  bool ok = true;
  if (const auto n = node["name"]; n && n.IsScalar() && !n.Scalar().empty())
    if (auto text = substitute(n.Scalar(), scope, loc(n), scope.prefix + n.Scalar())) name = *text;
  if (!printable_name(name)) {
    error(loc(node["name"]), "'name' holds a control character or bytes that are not UTF-8", "use plain text for names",
          fmt::format("#{}", position));
    name.clear(), ok = false;
  }

  const auto op_raw = node["op"];
  const YAML::Node op_node = op_raw ? resolved(op_raw, scope, loc(op_raw), scope.prefix + name, ok) : op_raw;
  std::string shown = scope.prefix + (name.empty() ? fmt::format("#{}", position) : name);
  if (!op_node) {
    error(def.loc, "has no 'op'", fmt::format("give it an op, one of: {}", fmt::join(op_names(), ", ")), shown);
    def.invalid = true;
    add(name.empty() ? fmt::format("#{}", position) : name);
    return;
  }
  auto op = op_node.IsScalar() ? op_from_name(op_node.Scalar()) : std::nullopt;
  if (!op) {
    std::string guess = op_node.IsScalar() ? detail::closest(op_node.Scalar(), op_names()) : "";
    if (ok)
      error(loc(op_raw), fmt::format("unknown op {}", show(op_node)),
            guess.empty() ? fmt::format("ops are: {}", fmt::join(op_names(), ", ")) : fmt::format("did you mean '{}'?", guess),
            shown);
    def.invalid = true;
    add(name.empty() ? fmt::format("#{}", position) : name);
    return;
  }
  def.op = *op;
  const auto& opdef = detail::op_def(*op);
  if (name.empty()) name = fmt::format("{}{}", opdef.name, position);
  const std::string full = scope.prefix + name;
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
    const YAML::Node& raw = kv.second;
    std::string k = key.IsScalar() ? key.Scalar() : "";
    SourceLoc where = loc(key);
    if (!seen.insert(k).second) {
      error(where, fmt::format("key '{}' appears twice", k), "keep one of them", full, context);
      def.invalid = true;
      continue;
    }
    if (k == "op") continue;
    if (k == "name") {
      if (!raw.IsScalar() || raw.Scalar().empty()) {
        error(where, fmt::format("'name' must be a non-empty string, got {}", show(raw)), {}, full, context);
        def.invalid = true;
      }
      continue;
    }
    if (k == "from") {
      if (raw.IsScalar() && !raw.Scalar().empty()) {
        if (auto in = input_name(raw, scope, full, context)) def.inputs = {*in};
        else def.invalid = true;
      } else if (raw.IsSequence() && raw.size() > 0) {
        for (const auto& item : raw) {
          if (!item.IsScalar()) {
            error(loc(item), fmt::format("'from' must list layer names, got {}", show(item)), {}, full, context);
            def.invalid = true;
            break;
          }
          if (auto in = input_name(item, scope, full, context)) def.inputs.push_back(*in);
          else def.invalid = true;
        }
      } else {
        error(where, fmt::format("'from' must be {}, got {}", expected(KeyType::names), show(raw)), {}, full, context);
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
      error(where, fmt::format("unknown key '{}' for op {}", k, opdef.name), hint, full, context);
      def.invalid = true;
      continue;
    }
    bool value_ok = true;
    const YAML::Node value = resolved(raw, scope, loc(raw), full, value_ok);
    if (!value_ok || !layer_key(def, *it, value, loc(raw), full, context)) def.invalid = true;
  }
  for (const auto& k : keys) {
    if (!k.required || seen.count(std::string(k.name))) continue;
    std::vector<std::string_view> required;
    for (const auto& r : keys)
      if (r.required) required.push_back(r.name);
    error(def.loc, fmt::format("missing required key '{}'", k.name),
          fmt::format("{} needs: {}", opdef.name, fmt::join(required, ", ")), full, context);
    def.invalid = true;
  }
  if (!ok) def.invalid = true;
  add(name);
}

// ---- Blocks -------------------------------------------------------------------------
//
// A block is expanded where it is used, one instance at a time, straight into the builder:
// its layers get the instance's prefix, `${name}` and `${expression}` are replaced by the
// instance's parameter values, `${in}` by the instance's input. Instances without a name
// add no prefix and share the names of the instance around them (a macro).

// The instance a block can be nested in at most; deeper is surely a mistake (and each level
// is a frame of the parser's stack).
constexpr int kMaxBlockDepth = 64;

// Words that an instance line uses itself, so no block parameter may be called that.
constexpr std::string_view kInstanceKeys[] = {"name", "block", "repeat", "first", "from"};

bool identifier(std::string_view s) {
  if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

// A number as a spec writes it: integers without a decimal point, others as short as exact.
std::string number_text(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<std::int64_t>(v));
  return fmt::format("{}", v);
}

// A parameter value as given: a number expression becomes its number, any other word stays.
std::string normalized(const std::string& text) {
  if (auto v = detail::eval_number(text)) return number_text(*v);
  return text;
}

std::vector<std::string> SpecParser::scope_notes(const Scope* scope) const {
  std::vector<std::string> notes;
  for (const Scope* s = scope; s && s->block; s = s->parent) {
    std::vector<std::string> values;
    for (const auto& [k, v] : s->params) values.push_back(fmt::format("{}: {}", k, v));
    const std::string with = values.empty() ? "" : fmt::format(" ({})", fmt::join(values, ", "));
    const std::string where = fmt::format("{}:{}:{}", s->at.file, s->at.line, s->at.column);
    notes.push_back(s->path.empty() ? fmt::format("in an instance of block '{}'{} at {}", s->block->name, with, where)
                                    : fmt::format("in '{}', an instance of block '{}'{} at {}", s->path, s->block->name, with, where));
  }
  return notes;
}

// The value of `${expr}`: a parameter's value, or an arithmetic expression of parameters.
std::optional<std::string> SpecParser::param_value(std::string_view expr, const Scope& scope, const SourceLoc& where,
                                                   const std::string& layer) {
  auto find = [&](std::string_view name) -> const std::string* {
    for (const auto& [k, v] : scope.params)
      if (k == name) return &v;
    return nullptr;
  };
  auto undefined = [&](std::string_view name) {
    if (!scope.block) {
      error(where, fmt::format("'${{{}}}' is used outside a block", name),
            "only the layers of a block (under blocks:) have parameters to substitute", layer);
      return;
    }
    std::vector<std::string_view> names;
    for (const auto& [k, v] : scope.params) names.push_back(k);
    const std::string guess = detail::closest(name, names);
    error(where, fmt::format("'${{{}}}' is not defined: block '{}' has {}", name, scope.block->name,
                             names.empty() ? std::string("no parameters")
                                           : fmt::format("the parameter{} {}", names.size() == 1 ? "" : "s", fmt::join(names, ", "))),
          guess.empty() ? fmt::format("declare it under the block's params:, e.g. params: {{{}: 1}}", name)
                        : fmt::format("did you mean '${{{}}}'?", guess),
          layer);
  };
  if (expr == "in") {
    error(where, "'${in}' names the block's input layer; it can only be used in from:",
          "pass numbers as block parameters; name the input in from: [\"${in}\"]", layer);
    return std::nullopt;
  }
  if (identifier(expr)) {
    if (const std::string* v = find(expr)) return *v;
    undefined(expr);
    return std::nullopt;
  }
  // An expression: each name replaced by its value, which must be a number.
  std::string text;
  for (std::size_t i = 0; i < expr.size();) {
    const char c = expr[i];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      std::size_t j = i;
      while (j < expr.size() && (std::isalnum(static_cast<unsigned char>(expr[j])) || expr[j] == '_')) ++j;
      const std::string_view name = expr.substr(i, j - i);
      const std::string* v = find(name);
      if (!v) {
        undefined(name);
        return std::nullopt;
      }
      if (!detail::eval_number(*v)) {
        error(where, fmt::format("'${{{}}}' computes with parameter '{}', which is '{}', not a number", expr, name, *v),
              fmt::format("give '{}' a number, or use it alone: ${{{}}}", name, name), layer);
        return std::nullopt;
      }
      text += "(" + *v + ")";
      i = j;
    } else {
      text += c;
      ++i;
    }
  }
  if (auto v = detail::eval_number(text)) return number_text(*v);
  error(where, fmt::format("'${{{}}}' is not a parameter name or an arithmetic expression of parameters", expr),
        "write ${out}, or an expression such as ${out * 4} or ${(in_ch + out) / 2}", layer);
  return std::nullopt;
}

// `text` with every ${...} replaced; nullopt (reported) when one cannot be.
std::optional<std::string> SpecParser::substitute(const std::string& text, const Scope& scope, const SourceLoc& where,
                                                  const std::string& layer) {
  std::string out;
  std::size_t i = 0;
  for (std::size_t at; (at = text.find("${", i)) != std::string::npos;) {
    const std::size_t end = text.find('}', at + 2);
    if (end == std::string::npos) {
      error(where, fmt::format("'{}' opens '${{' without a closing '}}'", text), "write ${name}", layer);
      return std::nullopt;
    }
    std::string_view expr = std::string_view(text).substr(at + 2, end - at - 2);
    while (!expr.empty() && expr.front() == ' ') expr.remove_prefix(1);
    while (!expr.empty() && expr.back() == ' ') expr.remove_suffix(1);
    auto value = param_value(expr, scope, where, layer);
    if (!value) return std::nullopt;
    out += text.substr(i, at - i);
    out += *value;
    i = end + 1;
  }
  out += text.substr(i);
  return out;
}

// `node` with its ${...} replaced: the node itself when it has none (keeping its position).
YAML::Node SpecParser::resolved(const YAML::Node& node, const Scope& scope, const SourceLoc& where, const std::string& layer,
                                bool& ok) {
  auto has = [](const YAML::Node& n) { return n.IsScalar() && n.Scalar().find("${") != std::string::npos; };
  if (has(node)) {
    auto text = substitute(node.Scalar(), scope, where, layer);
    if (!text) {
      ok = false;
      return node;
    }
    return YAML::Node(*text);
  }
  if (node.IsSequence() && std::any_of(node.begin(), node.end(), has)) {
    YAML::Node list(YAML::NodeType::Sequence);
    for (const auto& item : node) list.push_back(resolved(item, scope, where, layer, ok));
    return list;
  }
  return node;
}

// One name of a from: list as the builder knows it: ${in} is the instance's input, a name
// inside a block one of the instance's own layers, an instance's name its output.
std::optional<std::string> SpecParser::input_name(const YAML::Node& item, const Scope& scope, const std::string& layer,
                                                  const std::string& context) {
  const std::string& raw = item.Scalar();
  const SourceLoc where = loc(item);
  std::string_view trimmed = raw;
  while (!trimmed.empty() && trimmed.front() == ' ') trimmed.remove_prefix(1);
  while (!trimmed.empty() && trimmed.back() == ' ') trimmed.remove_suffix(1);
  if (trimmed == "${in}" || trimmed == "${ in }") {
    if (scope.block) return scope.input;
    error(where, "'${in}' is used outside a block", "at the top level, from: names a layer, or input", layer, context);
    return std::nullopt;
  }
  auto name = substitute(raw, scope, where, layer);
  if (!name) return std::nullopt;
  if (!scope.block) {
    auto alias = aliases_.find(*name);
    return alias == aliases_.end() ? *name : alias->second;
  }
  if (auto it = scope.locals->find(*name); it != scope.locals->end()) return it->second;
  std::vector<std::string_view> names{"${in}"};
  for (const auto& [k, v] : *scope.locals) names.push_back(k);
  const std::string guess = detail::closest(*name, names);
  error(where,
        fmt::format("from: names '{}', which is not a layer of this instance of block '{}' (layers of a block can read "
                    "the block's own earlier layers and ${{in}})",
                    *name, scope.block->name),
        guess.empty() ? "name one of the block's earlier layers, or ${in} for the instance's input"
                      : fmt::format("did you mean '{}'?", guess),
        layer, context);
  return std::nullopt;
}

void SpecParser::read_blocks(const YAML::Node& node) {
  if (!node.IsMap()) {
    error(loc(node), fmt::format("'blocks' must be a mapping of block names to blocks, got {}", show(node)),
          "e.g. blocks: {basic: {params: {out: 64}, layers: [...]}}");
    return;
  }
  for (const auto& kv : node) {
    const std::string name = kv.first.IsScalar() ? kv.first.Scalar() : "";
    const SourceLoc where = loc(kv.first);
    const YAML::Node& body = kv.second;
    if (name.empty() || name.find("${") != std::string::npos) {
      error(where, fmt::format("a block's name must be a plain word, got {}", show(kv.first)));
      continue;
    }
    if (blocks_.count(name)) {
      error(where, fmt::format("block '{}' is defined twice", name), "keep one of them");
      continue;
    }
    if (!body.IsMap()) {
      error(where, fmt::format("block '{}' must be a mapping with layers (and params), got {}", name, show(body)),
            "e.g. basic: {params: {out: 64}, layers: [{op: conv, out: \"${out}\", kernel: 3}]}");
      continue;
    }
    BlockDef block;
    block.name = name;
    block.loc = where;
    bool ok = true;
    for (const auto& entry : body) {
      const std::string k = entry.first.IsScalar() ? entry.first.Scalar() : "";
      if (k == "layers" || k == "params") continue;
      const std::string guess = detail::closest(k, {"layers", "params"});
      error(loc(entry.first), fmt::format("unknown key '{}' in block '{}'", k, name),
            guess.empty() ? "a block has params and layers" : fmt::format("did you mean '{}'?", guess));
      ok = false;
    }
    if (const auto params = body["params"]) {
      if (!params.IsMap()) {
        error(loc(params), fmt::format("block '{}': 'params' must be a mapping of names to default values, got {}", name, show(params)),
              "e.g. params: {out: 64, stride: 1}; a parameter without a default is written out: ~");
        ok = false;
      } else {
        for (const auto& p : params) {
          const std::string pname = p.first.IsScalar() ? p.first.Scalar() : "";
          const SourceLoc at = loc(p.first);
          if (!identifier(pname)) {
            error(at, fmt::format("block '{}': parameter name {} is not a name (letters, digits, _)", name, show(p.first)));
            ok = false;
          } else if (pname == "in" || std::find(std::begin(kInstanceKeys), std::end(kInstanceKeys), pname) != std::end(kInstanceKeys)) {
            error(at, fmt::format("block '{}': '{}' cannot be a parameter name: {}", name, pname,
                                  pname == "in" ? "${in} is the block's input" : "instance lines use it themselves"),
                  "choose another name");
            ok = false;
          } else if (std::any_of(block.params.begin(), block.params.end(), [&](const auto& q) { return q.first == pname; })) {
            error(at, fmt::format("block '{}': parameter '{}' appears twice", name, pname), "keep one of them");
            ok = false;
          } else if (p.second.IsNull()) {
            block.params.emplace_back(pname, std::nullopt);
          } else if (p.second.IsScalar() && p.second.Scalar().find("${") == std::string::npos) {
            block.params.emplace_back(pname, normalized(p.second.Scalar()));
          } else {
            error(loc(p.second), fmt::format("block '{}': the default of '{}' must be a number or a word, got {}", name, pname,
                                             show(p.second)),
                  "write ~ for a parameter every instance must give");
            ok = false;
          }
        }
      }
    }
    const auto layers = body["layers"];
    if (!layers) {
      error(where, fmt::format("block '{}' has no layers", name), "list them under layers:, as in the model's layers:");
      ok = false;
    } else if (!layers.IsSequence() || layers.size() == 0) {
      error(loc(layers), fmt::format("block '{}': 'layers' must be a non-empty list of layers, got {}", name,
                                     layers.IsSequence() ? std::string("an empty list") : show(layers)));
      ok = false;
    }
    // A block with a broken definition is still known by name, so its uses are not reported
    // as unknown blocks too; they expand to nothing. (reset() rebinds; = would assign into.)
    block.valid = ok;
    if (ok) block.layers.reset(layers);
    blocks_.emplace(name, std::move(block));
  }
}

// An instance line: {name: layer2, block: basic, repeat: 2, out: 128, first: {block: down, stride: 2}}.
void SpecParser::instance(const YAML::Node& node, std::size_t position, Scope& scope, GraphBuilder& builder) {
  scope_ = &scope;
  const SourceLoc at = loc(node);
  std::string name;
  std::string shown = fmt::format("#{}", position);
  bool ok = true;
  if (const auto n = node["name"]) {
    auto text = n.IsScalar() && !n.Scalar().empty() ? substitute(n.Scalar(), scope, loc(n), scope.prefix + n.Scalar()) : std::nullopt;
    if (!n.IsScalar() || n.Scalar().empty())
      error(loc(n), fmt::format("'name' must be a non-empty string, got {}", show(n)),
            "e.g. name: layer2 (its layers are then layer2.conv1, ...)", shown), ok = false;
    if (text && !printable_name(*text)) {
      error(loc(n), "'name' holds a control character or bytes that are not UTF-8", "use plain text for names", shown);
      text.reset();
    }
    if (text) name = *text, shown = scope.prefix + name;
    else ok = false;
  }
  // The block, looked up; nullptr (reported) when it cannot be.
  auto find_block = [&](const YAML::Node& b) -> const BlockDef* {
    bool fine = true;
    const YAML::Node value = resolved(b, scope, loc(b), shown, fine);
    if (!fine) return nullptr;
    if (!value.IsScalar() || value.Scalar().empty()) {
      error(loc(b), fmt::format("'block' must name a block, got {}", show(value)),
            "e.g. block: basic, one of the blocks under blocks:", shown);
      return nullptr;
    }
    auto it = blocks_.find(value.Scalar());
    if (it != blocks_.end()) return it->second.used = true, &it->second;
    std::vector<std::string_view> names;
    for (const auto& [k, v] : blocks_) names.push_back(k);
    const std::string guess = detail::closest(value.Scalar(), names);
    error(loc(b), fmt::format("unknown block '{}'", value.Scalar()),
          guess.empty() ? (names.empty() ? std::string("define it under blocks: at the top of the spec")
                                         : fmt::format("blocks are: {}", fmt::join(names, ", ")))
                        : fmt::format("did you mean '{}'?", guess),
          shown);
    return nullptr;
  };
  const BlockDef* block = find_block(node["block"]);

  std::int64_t repeat = 1;
  bool indexed = false;  // repeat: given, so instances are called name.0, name.1, ...
  std::optional<std::string> from;
  // name -> (value, where): the instance's parameters, and those of `first:` for instance 0.
  std::vector<std::tuple<std::string, std::string, SourceLoc>> given, first_given;
  const BlockDef* first_block = nullptr;
  bool has_first = false;

  auto read_params = [&](const std::string& k, const YAML::Node& key, const YAML::Node& value, auto& into) {
    bool fine = true;
    const YAML::Node v = resolved(value, scope, loc(value), shown, fine);
    if (!fine) return false;
    if (!v.IsScalar() || v.Scalar().empty()) {
      error(loc(value), fmt::format("parameter '{}' must be a number or a word, got {}", k, show(v)),
            fmt::format("e.g. {}: 64, {}: 2*64 or {}: same", k, k, k), shown);
      return false;
    }
    into.emplace_back(k, normalized(v.Scalar()), loc(key));
    return true;
  };
  std::set<std::string> seen;
  for (const auto& kv : node) {
    const std::string k = kv.first.IsScalar() ? kv.first.Scalar() : "";
    if (!seen.insert(k).second) {
      error(loc(kv.first), fmt::format("key '{}' appears twice", k), "keep one of them", shown);
      ok = false;
      continue;
    }
    if (k == "name" || k == "block") continue;
    if (k == "repeat") {
      bool fine = true;
      const YAML::Node v = resolved(kv.second, scope, loc(kv.second), shown, fine);
      const auto n = fine ? integer(v) : std::nullopt;
      if (fine && (!n || *n < 1 || *n > kMaxLayers)) {
        error(loc(kv.second), fmt::format("'repeat' must be an integer from 1 to {}, got {}", format_count(kMaxLayers), show(v)),
              "repeat: N chains N instances, named name.0 to name.N-1", shown);
        fine = false;
      }
      if (fine) repeat = *n, indexed = true;
      else ok = false;
    } else if (k == "from") {
      if (!kv.second.IsScalar() || kv.second.Scalar().empty()) {
        error(loc(kv.second), fmt::format("an instance's 'from' must name one layer, got {}", show(kv.second)),
              "the block's first layer reads it; other inputs come through ${in}", shown);
        ok = false;
      } else if (!(from = input_name(kv.second, scope, shown, "block"))) {
        ok = false;
      }
    } else if (k == "first") {
      has_first = true;
      if (!kv.second.IsMap()) {
        error(loc(kv.second), fmt::format("'first' must be a mapping of a block and/or parameters for instance 0, got {}",
                                          show(kv.second)),
              "e.g. first: {block: down, stride: 2}", shown);
        ok = false;
        continue;
      }
      for (const auto& f : kv.second) {
        const std::string fk = f.first.IsScalar() ? f.first.Scalar() : "";
        if (fk == "block") {
          if (!(first_block = find_block(f.second))) ok = false;
        } else if (fk == "name" || fk == "repeat" || fk == "first" || fk == "from") {
          error(loc(f.first), fmt::format("'first' overrides the block and parameters of instance 0; '{}' is the instance's own", fk),
                "move it to the instance line", shown);
          ok = false;
        } else if (!read_params(fk, f.first, f.second, first_given)) {
          ok = false;
        }
      }
    } else if (!read_params(k, kv.first, kv.second, given)) {
      ok = false;
    }
  }
  if (!block) ok = false;
  if (has_first && !indexed && ok)
    error(at, "'first' needs 'repeat': it sets instance 0 of several", "add repeat: N, or use the first block directly", shown),
        ok = false;

  // The parameter values of instance `i`, checked against its block (each problem once).
  std::set<std::string> reported;
  auto params_for = [&](const BlockDef& b, bool first) -> std::optional<std::vector<std::pair<std::string, std::string>>> {
    std::vector<std::pair<std::string, std::string>> values;
    bool fine = true;
    std::vector<std::string_view> names;
    for (const auto& [p, d] : b.params) names.push_back(p);
    auto check = [&](const auto& list) {
      for (const auto& entry : list) {
        const std::string& k = std::get<0>(entry);
        const SourceLoc& where = std::get<2>(entry);
        if (std::any_of(b.params.begin(), b.params.end(), [&](const auto& p) { return p.first == k; })) continue;
        fine = false;
        if (!reported.insert(b.name + "/" + k).second) continue;
        const std::string guess = detail::closest(k, names);
        error(where, fmt::format("block '{}' has no parameter '{}'", b.name, k),
              guess.empty() ? (names.empty() ? std::string("it takes no parameters")
                                             : fmt::format("its parameters are: {}", fmt::join(names, ", ")))
                            : fmt::format("did you mean '{}'?", guess),
              shown);
      }
    };
    check(given);
    if (first) check(first_given);
    for (const auto& [p, d] : b.params) {
      std::optional<std::string> v = d;
      for (const auto& [k, value, where] : given)
        if (k == p) v = value;
      if (first)
        for (const auto& [k, value, where] : first_given)
          if (k == p) v = value;
      if (!v) {
        fine = false;
        if (reported.insert(b.name + "/" + p + "/missing").second)
          error(at, fmt::format("block '{}' needs parameter '{}' (it has no default)", b.name, p),
                fmt::format("add {}: <value> to this line", p), shown);
        continue;
      }
      values.emplace_back(p, *v);
    }
    if (!fine) return std::nullopt;
    return values;
  };

  const std::string path = name.empty() ? "" : scope.prefix + name;
  if (!path.empty() && layer_names_.count(path))
    error(at, fmt::format("the instance name '{}' is also the name of a layer", path), "give the layer or the instance another name",
          shown), ok = false;

  // An instance that cannot be expanded stands in the graph as one invalid layer under its
  // name, so that what reads it is skipped rather than reported again.
  auto placeholder = [&] {
    LayerDef def;
    def.loc = at;
    def.invalid = true;
    def.notes = scope_notes(&scope);
    const std::string local = name.empty() || layer_names_.count(path) ? fmt::format("#{}", position) : name;
    def.name = scope.prefix + local;
    if (scope.block) (*scope.locals)[local] = def.name;
    emitted(scope, def.name);
    builder.add(std::move(def));
  };
  if (!ok) return placeholder();
  for (std::int64_t i = 0; i < repeat && !too_many_; ++i) {
    const BlockDef& b = i == 0 && first_block ? *first_block : *block;
    scope_ = &scope;
    auto values = params_for(b, i == 0);
    if (!values) return placeholder();
    if (std::find(expanding_.begin(), expanding_.end(), b.name) != expanding_.end()) {
      std::vector<std::string> chain(std::find(expanding_.begin(), expanding_.end(), b.name), expanding_.end());
      chain.push_back(b.name);
      error(at, fmt::format("block '{}' uses itself: {}", b.name, fmt::join(chain, " -> ")),
            "a block can use other blocks, but not one that is being expanded", shown);
      return placeholder();
    }
    if (static_cast<int>(expanding_.size()) >= kMaxBlockDepth) {
      error(at, fmt::format("blocks nest more than {} deep here", kMaxBlockDepth),
            "flatten the nesting: a block may use blocks, but not 64 levels of them", shown);
      return placeholder();
    }
    if (!b.valid) return placeholder();  // its definition was reported
    std::map<std::string, std::string> own;
    Scope child;
    child.parent = &scope;
    child.block = &b;
    child.path = path.empty() ? "" : indexed ? fmt::format("{}.{}", path, i) : path;
    child.prefix = child.path.empty() ? scope.prefix : child.path + ".";
    child.at = at;
    child.params = std::move(*values);
    child.input = i == 0 ? (from ? *from : scope.at_start && scope.block ? scope.input : last_) : last_;
    child.locals = child.path.empty() ? scope.locals : &own;
    child.fold = !scope.fold.empty() ? scope.fold
                 : !child.path.empty() ? child.path
                                       : fmt::format("({} at line {})", b.name, at.line);
    child.fold_block = !scope.fold_block.empty() ? scope.fold_block : b.name;
    expanding_.push_back(b.name);
    layer_list(b.layers, child, builder);
    expanding_.pop_back();
    scope_ = &scope;
    if (!child.path.empty() && indexed) {
      aliases_[child.path] = last_;
      if (scope.block) (*scope.locals)[child.path.substr(scope.prefix.size())] = last_;
    }
  }
  if (!path.empty()) {
    aliases_[path] = last_;
    if (scope.block) (*scope.locals)[name] = last_;
  }
}

// The same mistake in a block is the same in each of its instances: one diagnostic for it,
// with a note naming the other instances, instead of one per instance.
std::vector<Diagnostic> merge_repeats(const std::vector<Diagnostic>& diags) {
  std::vector<Diagnostic> out;
  std::map<std::tuple<std::string, int, int, std::string, std::string, Severity>, std::size_t> first;
  std::map<std::size_t, std::vector<std::string>> others;
  for (const auto& d : diags) {
    const bool in_block = std::any_of(d.notes.begin(), d.notes.end(), [](const std::string& n) {
      return n.starts_with("in '") || n.starts_with("in an instance of block");
    });
    if (!d.loc.known() || !in_block) {
      out.push_back(d);
      continue;
    }
    auto [it, fresh] = first.emplace(std::make_tuple(d.loc.file, d.loc.line, d.loc.column, d.message, d.hint, d.severity), out.size());
    if (fresh) out.push_back(d);
    else others[it->second].push_back(d.layer);
  }
  for (auto& [index, layers] : others) {
    constexpr std::size_t kShown = 4;
    std::vector<std::string> shown(layers.begin(), layers.begin() + static_cast<std::ptrdiff_t>(std::min(layers.size(), kShown)));
    if (layers.size() > kShown) shown.push_back(fmt::format("and {} more", layers.size() - kShown));
    out[index].notes.push_back(fmt::format("the same in {} more instance{}: {}", layers.size(), layers.size() == 1 ? "" : "s",
                                           fmt::join(shown, ", ")));
  }
  return out;
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

  const std::vector<std::string_view> top_keys{"name", "input", "classes", "blocks", "layers", "train"};
  std::set<std::string> seen;
  for (const auto& kv : root) {
    std::string k = kv.first.IsScalar() ? kv.first.Scalar() : "";
    if (!seen.insert(k).second) error(loc(kv.first), fmt::format("key '{}' appears twice", k), "keep one of them");
    if (std::find(top_keys.begin(), top_keys.end(), k) != top_keys.end()) continue;
    std::string guess = detail::closest(k, top_keys);
    error(loc(kv.first), fmt::format("unknown key '{}' in the model spec", k),
          guess.empty() ? "a model spec has name, input, classes, blocks, layers and train" : fmt::format("did you mean '{}'?", guess));
  }

  std::string name = std::filesystem::path(file_).stem().string();
  if (const auto n = root["name"]) {
    if (n.IsScalar() && !n.Scalar().empty() && printable_name(n.Scalar())) name = n.Scalar();
    else if (n.IsScalar() && !n.Scalar().empty())
      error(loc(n), "'name' holds a control character or bytes that are not UTF-8", "use plain text for names");
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
    if (const auto blocks = root["blocks"]) read_blocks(blocks);
    std::map<std::string, std::string> top_names;
    Scope top;
    top.locals = &top_names;
    top.at_start = false;
    last_ = "input";
    layer_list(layers, top, builder);
    scope_ = nullptr;
    // A block defined but never instantiated is probably a layer line that lost its block:.
    for (const auto& [name, block] : blocks_) {
      if (!block.valid || block.used) continue;
      Diagnostic d;
      d.severity = Severity::warning;
      d.loc = block.loc;
      d.message = fmt::format("block '{}' is defined but never used", name);
      d.hint = fmt::format("remove it from blocks:, or use it in a layer line: {{block: {}}}", name);
      diags_.push_back(std::move(d));
    }
  }

  TrainConfig train;
  if (const auto t = root["train"]) train = detail::parse_train_section(t, file_, diags_);

  for (auto& d : diags_) builder.report(std::move(d));
  try {
    Graph graph = builder.build();
    return Spec{std::move(graph), file_, std::move(train)};
  } catch (const GraphError& e) {
    throw GraphError(merge_repeats(e.diagnostics()));
  }
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
