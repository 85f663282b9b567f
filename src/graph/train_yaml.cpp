// The `train:` section of a model spec: every key typed, range-checked and positioned, with
// "did you mean" for typos, like the layers.
#include "graph/train_yaml.hpp"

#include <algorithm>
#include <fmt/format.h>
#include <set>

#include "graph/yaml_util.hpp"
#include "util/text.hpp"

namespace kiln::detail {

namespace {

class TrainParser {
 public:
  TrainParser(const std::string& file, std::vector<Diagnostic>& diags) : file_(file), diags_(diags) {}

  void error(const YAML::Node& at, std::string message, std::string hint = {}) {
    Diagnostic d;
    d.loc = yaml_loc(at, file_);
    d.message = std::move(message);
    d.hint = std::move(hint);
    diags_.push_back(std::move(d));
  }

  // Checks the keys of a mapping against `known`, reporting unknown and duplicate ones.
  bool keys(const YAML::Node& map, const std::vector<std::string_view>& known, const std::string& where) {
    if (!map.IsMap()) {
      error(map, fmt::format("'{}' must be a mapping, got {}", where, yaml_show(map)));
      return false;
    }
    std::set<std::string> seen;
    for (const auto& kv : map) {
      std::string k = kv.first.IsScalar() ? kv.first.Scalar() : "";
      if (!seen.insert(k).second) error(kv.first, fmt::format("key '{}' appears twice in {}", k, where), "keep one of them");
      if (std::find(known.begin(), known.end(), k) != known.end()) continue;
      std::string guess = closest(k, known);
      error(kv.first, fmt::format("unknown key '{}' in {}", k, where),
            guess.empty() ? fmt::format("{} takes: {}", where, fmt::join(known, ", ")) : fmt::format("did you mean '{}'?", guess));
    }
    return true;
  }

  void number(const YAML::Node& map, const char* key, double& out, double lo, double hi, bool hi_open, const char* range) {
    const auto v = map[key];
    if (!v) return;
    auto x = yaml_number(v);
    if (!x || *x < lo || *x > hi || (hi_open && *x == hi)) {
      error(v, fmt::format("'{}' must be a number {}, got {}", key, range, yaml_show(v)));
      return;
    }
    out = *x;
  }

  template <class Int>
  void integer(const YAML::Node& map, const char* key, Int& out, std::int64_t lo) {
    const auto v = map[key];
    if (!v) return;
    auto x = yaml_integer(v);
    if (!x || *x < lo) {
      error(v, fmt::format("'{}' must be an integer of at least {}, got {}", key, lo, yaml_show(v)));
      return;
    }
    out = static_cast<Int>(*x);
  }

  void boolean(const YAML::Node& map, const char* key, bool& out) {
    const auto v = map[key];
    if (!v) return;
    auto x = yaml_bool(v);
    if (!x) {
      error(v, fmt::format("'{}' must be true or false, got {}", key, yaml_show(v)));
      return;
    }
    out = *x;
  }

  std::optional<std::string> choice(const YAML::Node& v, const char* key, const std::vector<std::string_view>& options) {
    if (v.IsScalar() && std::find(options.begin(), options.end(), v.Scalar()) != options.end()) return v.Scalar();
    std::string guess = v.IsScalar() ? closest(v.Scalar(), options) : "";
    error(v, fmt::format("'{}' must be one of {}, got {}", key, fmt::join(options, ", "), yaml_show(v)),
          guess.empty() ? "" : fmt::format("did you mean '{}'?", guess));
    return std::nullopt;
  }

  void schedule(const YAML::Node& v, Schedule& s) {
    static const std::vector<std::string_view> kinds{"constant", "step", "cosine", "linear"};
    // Initialized once, never assigned: assigning a yaml-cpp Node writes through to the
    // node it was copied from.
    if (v.IsMap() && !keys(v, {"type", "every", "gamma", "warmup", "start", "final"}, "schedule")) return;
    const YAML::Node type = v.IsMap() ? v["type"] : v;
    if (!type) {
      error(v, "schedule has no 'type'", "type: constant, step, cosine or linear");
      return;
    }
    auto kind = choice(type, "schedule", kinds);
    if (!kind) return;
    s.kind = *kind == "constant" ? Schedule::Kind::constant
             : *kind == "step"   ? Schedule::Kind::step
             : *kind == "cosine" ? Schedule::Kind::cosine
                                 : Schedule::Kind::linear;
    if (!v.IsMap()) return;
    number(v, "every", s.every, 1e-9, 1e12, false, "> 0 (epochs)");
    number(v, "gamma", s.gamma, 0, 1e12, false, ">= 0");
    number(v, "warmup", s.warmup, 0, 1, false, "in [0, 1] (a fraction of the run)");
    number(v, "start", s.start, 0, 1e12, false, ">= 0 (a fraction of lr)");
    number(v, "final", s.final, 0, 1e12, false, ">= 0 (a fraction of lr)");
  }

  void augment(const YAML::Node& v, Augment& a) {
    if (auto on = yaml_bool(v)) {
      a = *on ? Augment{4, 0, true} : Augment{};
      return;
    }
    if (!v.IsMap()) {
      error(v, fmt::format("'augment' must be true, false, or a mapping of crop, translate, flip; got {}", yaml_show(v)));
      return;
    }
    if (!keys(v, {"crop", "translate", "flip"}, "augment")) return;
    a = Augment{};
    integer(v, "crop", a.crop, 0);
    integer(v, "translate", a.translate, 0);
    if (const auto f = v["flip"]; f && f.IsScalar() && f.Scalar() == "alternate") a.flip = a.alternate_flip = true;
    else if (f) {
      auto b = yaml_bool(f);
      if (!b) error(f, fmt::format("'flip' must be true, false or alternate, got {}", yaml_show(f)));
      else a.flip = *b;
    }
    if (a.crop > 0 && a.translate > 0) error(v, "augment: crop and translate are alternatives; set one of them");
    if (a.crop > 16 || a.translate > 16) error(v, "augment: crop and translate shift by at most 16 pixels");
  }

  void lookahead(const YAML::Node& v, Lookahead& l) {
    if (!keys(v, {"every", "strength", "power"}, "lookahead")) return;
    integer(v, "every", l.every, 1);
    number(v, "strength", l.strength, 0, 1, false, "in [0, 1]");
    number(v, "power", l.power, 0, 1e3, false, ">= 0");
    if (!v["every"]) error(v, "lookahead needs 'every' (steps between averages)", "e.g. lookahead: {every: 5}");
  }

  void whiten(const YAML::Node& v, TrainConfig& c) {
    if (!keys(v, {"images", "eps"}, "whiten")) return;
    integer(v, "images", c.whiten_images, 1);
    number(v, "eps", c.whiten_eps, 0, 1e9, false, ">= 0");
  }

  void normalize(const YAML::Node& v, TrainConfig& c) {
    if (!keys(v, {"mean", "std"}, "normalize")) return;
    auto list = [&](const char* key, std::vector<float>& out, bool positive) {
      const auto n = v[key];
      if (!n) return;
      std::vector<float> values;
      bool ok = n.IsSequence() && n.size() > 0;
      if (ok)
        for (const auto& e : n) {
          auto x = yaml_number(e);
          if (!x || (positive && *x <= 0)) ok = false;
          else values.push_back(static_cast<float>(*x));
        }
      if (!ok) error(n, fmt::format("'{}' must be a list of {}numbers, one per channel", key, positive ? "positive " : ""));
      else out = values;
    };
    list("mean", c.mean, false);
    list("std", c.std, true);
    if (c.mean.size() != c.std.size()) error(v, fmt::format("normalize: mean has {} values but std has {}", c.mean.size(), c.std.size()));
  }

 private:
  const std::string& file_;
  std::vector<Diagnostic>& diags_;
};

}  // namespace

TrainConfig parse_train_section(const YAML::Node& train, const std::string& file, std::vector<Diagnostic>& diags) {
  TrainConfig c;
  if (train.IsNull()) return c;
  TrainParser p(file, diags);
  static const std::vector<std::string_view> known{
      "epochs", "batch",          "lr",       "momentum", "nesterov",  "weight_decay", "weight_decay_mode", "schedule",
      "label_smoothing", "reduction", "augment", "shuffle", "drop_last", "seed",         "normalize",
      "lookahead", "tta", "whiten", "tf32", "dtype", "loss_scale", "format", "label"};
  if (!p.keys(train, known, "train")) return c;
  p.number(train, "epochs", c.epochs, 1e-9, 1e9, false, "> 0");
  p.integer(train, "batch", c.batch, 1);
  p.number(train, "lr", c.lr, 0, 1e9, false, ">= 0");
  p.number(train, "momentum", c.momentum, 0, 1, true, "in [0, 1)");
  p.boolean(train, "nesterov", c.nesterov);
  p.number(train, "weight_decay", c.weight_decay, 0, 1e9, false, ">= 0");
  if (const auto v = train["weight_decay_mode"])
    if (auto mode = p.choice(v, "weight_decay_mode", {"coupled", "decoupled", "lr_independent"}))
      c.decay_mode = *mode == "coupled" ? DecayMode::coupled : *mode == "decoupled" ? DecayMode::decoupled : DecayMode::lr_independent;
  if (const auto v = train["schedule"]) p.schedule(v, c.schedule);
  p.number(train, "label_smoothing", c.label_smoothing, 0, 1, true, "in [0, 1)");
  if (const auto v = train["reduction"])
    if (auto r = p.choice(v, "reduction", {"mean", "sum"})) c.sum_loss = *r == "sum";
  if (const auto v = train["augment"]) p.augment(v, c.augment);
  p.boolean(train, "shuffle", c.shuffle);
  p.boolean(train, "drop_last", c.drop_last);
  p.boolean(train, "tf32", c.tf32);
  if (const auto v = train["dtype"])
    if (auto name = p.choice(v, "dtype", {"fp32", "bf16", "fp16"})) c.dtype = parse_dtype(*name);
  p.number(train, "loss_scale", c.loss_scale, 1, 1e30, false, ">= 1");
  p.integer(train, "seed", c.seed, 0);
  if (const auto v = train["normalize"]) {
    p.normalize(v, c);
    c.normalize_given = true;
  }
  if (const auto v = train["format"])
    if (auto name = p.choice(v, "format", {"cifar10", "cifar100", "mnist", "fashion-mnist"})) {
      DataFormat f{};
      parse_format(*name, f);
      c.format = f;
    }
  if (const auto v = train["label"])
    if (auto name = p.choice(v, "label", {"fine", "coarse"})) c.label = *name == "coarse" ? Cifar100Label::coarse : Cifar100Label::fine;
  if (const auto v = train["lookahead"]) p.lookahead(v, c.lookahead);
  p.boolean(train, "tta", c.tta);
  if (const auto v = train["whiten"]) p.whiten(v, c);
  if (c.nesterov && c.momentum == 0) p.error(train["nesterov"], "nesterov needs a momentum above 0");
  return c;
}

}  // namespace kiln::detail
