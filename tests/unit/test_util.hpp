#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kiln/kiln.hpp"

namespace kiln::test {

inline std::string repo_path(const std::string& relative) { return std::string(KILN_SOURCE_DIR) + "/" + relative; }

// Parses a spec that must fail and returns its diagnostics (errors only).
inline std::vector<Diagnostic> errors_of(const std::string& yaml, const std::string& file = "bad.yaml") {
  try {
    parse_spec(yaml, file);
  } catch (const GraphError& e) {
    std::vector<Diagnostic> errors;
    for (const auto& d : e.diagnostics())
      if (d.severity == Severity::error) errors.push_back(d);
    return errors;
  }
  ADD_FAILURE() << "expected a GraphError for:\n" << yaml;
  return {};
}

// The single error a spec produces.
inline Diagnostic only_error(const std::string& yaml, const std::string& file = "bad.yaml") {
  auto errors = errors_of(yaml, file);
  EXPECT_EQ(errors.size(), 1u) << [&] {
    std::string all;
    for (const auto& d : errors) all += d.format();
    return all;
  }();
  return errors.empty() ? Diagnostic{} : errors.front();
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace kiln::test
