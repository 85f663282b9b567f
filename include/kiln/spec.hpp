#pragma once

#include <string>
#include <string_view>

#include "kiln/export.hpp"
#include "kiln/graph.hpp"
#include "kiln/train.hpp"

namespace kiln {

/// A model spec: the validated graph and its training recipe (the `train:` section, with
/// defaults for what it leaves out).
struct Spec {
  Graph graph;
  std::string file;
  TrainConfig train;
};

/// Reads and validates a YAML model spec. Throws GraphError with every problem found
/// (file:line:column, layer, the arithmetic, a hint), including an unreadable file.
KILN_API Spec load_spec(const std::string& path);

/// The same from text; `file` names it in diagnostics.
KILN_API Spec parse_spec(std::string_view yaml, const std::string& file = "<spec>");

}  // namespace kiln
