#pragma once

// Shared pieces of the kiln command line: every command registers itself on the root app
// and returns its exit code; errors are printed here, once.
#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "kiln/kiln.hpp"

namespace kiln::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

void add_check(CLI::App& root, std::vector<Command>& commands);
void add_train(CLI::App& root, std::vector<Command>& commands);
void add_eval(CLI::App& root, std::vector<Command>& commands);
void add_bench(CLI::App& root, std::vector<Command>& commands);
void add_synth(CLI::App& root, std::vector<Command>& commands);
void add_info(CLI::App& root, std::vector<Command>& commands);

// The default model (data/models/cifar_quick.yaml), found from the working directory or
// beside the executable.
std::string default_model();

// The data a command trains or evaluates on: --data DIR, else $KILN_CIFAR10_DIR, else
// data/cifar-10-batches-bin if present, else (when `allow_synthetic`) a synthetic set made
// in memory, saying so on stderr. `description` says which; `resolved_dir`, where given, gets
// the directory read (empty for the synthetic set).
Cifar10 resolve_data(const std::string& dir, bool allow_synthetic, std::string& description,
                     std::string* resolved_dir = nullptr);

// The synthetic set made in memory (what resolve_data falls back to), saying so on stderr.
Cifar10 synthetic_data(std::string& description);

// "cpu", "cuda", or "auto" (cuda when built with CUDA and a device is present).
Backend resolve_device(const std::string& device, int* index = nullptr);
// "cuda:N" -> N ("cuda" -> 0); nullopt for anything else.
std::optional<int> cuda_index(const std::string& device);
// The --device validator of train, eval and bench: auto, cpu, cuda or cuda:N.
const CLI::Validator& device_choice();

// Numeric option checks whose message reads "--batch: must be a positive number, got 0"
// (CLI11's own print the range, with a 310-digit upper bound).
const CLI::Validator& positive();
const CLI::Validator& non_negative();

// Diagnostics as JSON objects, for --json output.
nlohmann::json to_json(const Diagnostic& d);

// Prints warnings (stderr).
void print_warnings(const Graph& graph);

// The command line as given, for run.yaml: set once by main.
void set_command_line(int argc, char** argv);
const std::vector<std::string>& command_line();

}  // namespace kiln::cli
