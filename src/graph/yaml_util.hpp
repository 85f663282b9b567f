#pragma once

// Reading typed values from yaml-cpp nodes, with positions for diagnostics. Shared by the
// model spec parser and the train: section parser.
#include <cstdint>
#include <fmt/format.h>
#include <optional>
#include <string>
#include <yaml-cpp/yaml.h>

#include "kiln/error.hpp"
#include "util/expr.hpp"

namespace kiln::detail {

inline SourceLoc yaml_loc(const YAML::Node& node, const std::string& file) {
  const YAML::Mark m = node.Mark();
  if (m.line < 0) return {file, 0, 0};
  return {file, m.line + 1, m.column + 1};
}

// How a value is shown in a message: its text, or what kind of node it is.
inline std::string yaml_show(const YAML::Node& node) {
  if (node.IsScalar()) return fmt::format("'{}'", node.Scalar());
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "nothing";
}

inline std::optional<std::int64_t> yaml_integer(const YAML::Node& node) {
  if (!node.IsScalar()) return std::nullopt;
  auto v = parse_integer(node.Scalar());
  if (!v) return std::nullopt;
  return static_cast<std::int64_t>(*v);
}

inline std::optional<double> yaml_number(const YAML::Node& node) {
  if (!node.IsScalar()) return std::nullopt;
  return eval_number(node.Scalar());
}

inline std::optional<bool> yaml_bool(const YAML::Node& node) {
  if (!node.IsScalar()) return std::nullopt;
  const std::string& s = node.Scalar();
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  return std::nullopt;
}

}  // namespace kiln::detail
