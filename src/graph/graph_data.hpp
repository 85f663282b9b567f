#pragma once

#include <string>
#include <vector>

#include "kiln/graph.hpp"

namespace kiln {

struct Graph::Data {
  std::string name;
  std::string source;
  Shape input;
  std::int64_t classes = 0;
  std::vector<Layer> layers;
  std::vector<Param> params;
  std::vector<Diagnostic> warnings;
  std::int64_t parameter_count = 0;
  std::int64_t flops = 0;
};

}  // namespace kiln
