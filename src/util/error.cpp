#include "kiln/error.hpp"

#include <fmt/format.h>

namespace kiln {

std::string Diagnostic::format() const {
  std::string out;
  if (!loc.file.empty()) {
    out += loc.file;
    if (loc.known()) out += fmt::format(":{}:{}", loc.line, loc.column);
    out += ": ";
  }
  out += severity == Severity::error ? "error: " : "warning: ";
  if (!layer.empty()) {
    out += fmt::format("layer '{}'", layer);
    if (!context.empty()) out += fmt::format(" ({})", context);
    out += ": ";
  }
  out += message;
  out += '\n';
  for (const auto& note : notes) out += fmt::format("    {}\n", note);
  if (!hint.empty()) out += fmt::format("    hint: {}\n", hint);
  return out;
}

Error::Error(const std::string& what, ExitCode code) : std::runtime_error(what), code_(code) {}

namespace {

std::string join_diagnostics(const std::vector<Diagnostic>& diagnostics) {
  std::string out;
  for (const auto& d : diagnostics) out += d.format();
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

GraphError::GraphError(std::vector<Diagnostic> diagnostics)
    : Error(join_diagnostics(diagnostics), ExitCode::invalid_input), diagnostics_(std::move(diagnostics)) {}

DataError::DataError(std::string file, std::int64_t record, const std::string& message)
    : Error(message, ExitCode::invalid_input), file_(std::move(file)), record_(record) {}

CheckpointError::CheckpointError(std::string file, const std::string& message, std::vector<std::string> tensors)
    : Error(message, ExitCode::invalid_input), file_(std::move(file)), tensors_(std::move(tensors)) {}

UsageError::UsageError(const std::string& message) : Error(message, ExitCode::usage) {}

DeviceError::DeviceError(const std::string& message) : Error(message, ExitCode::runtime) {}

DivergenceError::DivergenceError(const std::string& message) : Error(message, ExitCode::runtime) {}

}  // namespace kiln
