#pragma once

#include <string>
#include <vector>
#include <yaml-cpp/yaml.h>

#include "kiln/error.hpp"
#include "kiln/train.hpp"

namespace kiln::detail {

// The spec's `train:` section; problems are appended to `diagnostics` with positions.
TrainConfig parse_train_section(const YAML::Node& train, const std::string& file, std::vector<Diagnostic>& diagnostics);

}  // namespace kiln::detail
