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
void add_predict(CLI::App& root, std::vector<Command>& commands);

// The default model (data/models/cifar_quick.yaml), found from the working directory or
// beside the executable.
std::string default_model();

// What a command asks of its data: --data, --format and --label, with the spec's format:
// and label: beneath them.
struct DataRequest {
  std::string dir;                              // --data; empty: the usual places
  std::optional<DataFormat> format;             // --format: read as this, no detection; empty: detected
  std::optional<DataFormat> spec_format;        // the spec's format: where to look without --data (else CIFAR-10)
  Cifar100Label label = Cifar100Label::fine;    // --label or the spec's
  bool label_flag = false;                      // --label was given (it needs CIFAR-100 data)
  Shape sample = Shape::chw(3, 32, 32);         // image folders: the model's input, what images are brought to
  bool resize = true;                           // image folders: false (--no-resize) refuses other sizes
};

// The data a command trains or evaluates on: --data DIR (its format detected unless
// --format names it), else the format's environment variable ($KILN_CIFAR10_DIR,
// $KILN_CIFAR100_DIR, $KILN_MNIST_DIR, $KILN_FASHION_MNIST_DIR), else its folder under data/
// (cifar-10-batches-bin, cifar-100-binary, mnist, fashion-mnist; Fashion-MNIST also
// /usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist), else (when
// `allow_synthetic`) a synthetic set in that format made in memory, saying so on stderr.
// `description` says which; `resolved_dir`, where given, gets the directory read (empty for
// the synthetic set).
Splits resolve_data(const DataRequest& want, bool allow_synthetic, std::string& description,
                    std::string* resolved_dir = nullptr);

// The synthetic set made in memory (what resolve_data falls back to).
Splits synthetic_data(const DataRequest& want, std::string& description);

// --format's value; anything else is a usage error (exit 2) with a did-you-mean.
DataFormat parse_format_flag(const std::string& text);
// The request of a command with --data, --format and --label over a spec's recipe.
DataRequest data_request(const std::string& dir, const std::string& format, const std::string& label, const Spec& spec);

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
