#pragma once

// Shared pieces of the kiln command line: every command registers itself on the root app
// and returns its exit code; errors are printed here, once.
#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kiln/kiln.hpp"

namespace kiln::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

void add_check(CLI::App& root, std::vector<Command>& commands);

// Diagnostics as JSON objects, for --json output.
nlohmann::json to_json(const Diagnostic& d);

// Prints warnings (stderr).
void print_warnings(const Graph& graph);

}  // namespace kiln::cli
