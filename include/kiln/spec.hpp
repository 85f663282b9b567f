#pragma once

/// @file
/// YAML model specs: the graph and its training recipe.

#include <string>
#include <string_view>

#include "kiln/export.hpp"
#include "kiln/graph.hpp"
#include "kiln/train.hpp"

namespace kiln {

/// A model spec: the validated graph and its training recipe (the `train:` section, with
/// defaults for what it leaves out).
struct Spec {
  Graph graph;        ///< the validated graph
  std::string file;   ///< the file it was read from, as given (or parse_spec()'s `file`)
  TrainConfig train;  ///< the `train:` section, defaults filled in
};

/// Reads and validates a YAML model spec. Throws GraphError with every problem found
/// (file:line:column, layer, the arithmetic, a hint), including an unreadable file.
KILN_API Spec load_spec(const std::string& path);

/// The same from text; `file` names it in diagnostics.
KILN_API Spec parse_spec(std::string_view yaml, const std::string& file = "<spec>");

}  // namespace kiln
