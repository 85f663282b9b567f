#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
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

// A fresh directory under the system's temporary one, removed with the object: `prefix`
// and `name` keep concurrent tests (and processes: the pid) apart.
struct TempDir {
  std::filesystem::path path;
  TempDir(const std::string& prefix, const std::string& name)
      : path(std::filesystem::temp_directory_path() / (prefix + "_" + name + "_" + std::to_string(getpid()))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str(const std::string& child = "") const { return (path / child).string(); }
};

// Two weights files hold the same tensors, bit for bit.
inline void expect_same_weights(const SafetensorsFile& a, const SafetensorsFile& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (std::size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].name, b.tensors[i].name);
    EXPECT_EQ(a.tensors[i].f32, b.tensors[i].f32) << a.tensors[i].name;
  }
}

}  // namespace kiln::test
