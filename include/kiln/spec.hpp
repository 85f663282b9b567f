#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kiln/export.hpp"
#include "kiln/graph.hpp"

namespace kiln {

/// A model spec: the validated graph and the raw `train:` section (YAML text), which the
/// trainer interprets.
struct Spec {
  Graph graph;
  std::string file;
  std::string train_yaml;
  /// `train: batch`, when the spec sets it.
  std::optional<std::int64_t> train_batch;
};

/// Reads and validates a YAML model spec. Throws GraphError with every problem found
/// (file:line:column, layer, the arithmetic, a hint), including an unreadable file.
KILN_API Spec load_spec(const std::string& path);

/// The same from text; `file` names it in diagnostics.
KILN_API Spec parse_spec(std::string_view yaml, const std::string& file = "<spec>");

}  // namespace kiln
