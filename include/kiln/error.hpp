#pragma once

/// @file
/// kiln's exceptions and diagnostics. Every error kiln throws derives from kiln::Error and
/// carries the exit code the CLI uses for it; user errors carry structured fields.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kiln/export.hpp"

namespace kiln {

/// Process exit codes shared by every kiln command.
enum class ExitCode : int {
  ok = 0,
  invalid_input = 1,  ///< invalid model, data or checkpoint (including a layer cuDNN rejects)
  usage = 2,          ///< bad command line
  runtime = 3,        ///< device or runtime failure, out of memory, training divergence
};

/// A place in a source file; line and column count from 1, 0 means unknown.
struct SourceLoc {
  std::string file;  ///< the spec file, as given
  int line = 0;      ///< from 1; 0: unknown
  int column = 0;    ///< from 1; 0: unknown

  /// True when the position is known (the builder's layers have none).
  bool known() const { return line > 0; }
};

/// Whether a Diagnostic makes the model invalid.
enum class Severity : std::uint8_t {
  error,    ///< the model is invalid
  warning,  ///< the model is valid but probably not what was meant (an unused layer)
};

/// One problem found in a model, reported compiler-style:
///
///     file:line:col: error: layer 'conv1' (conv 35x35, stride 1, pad 0): <message>
///         <note>
///         hint: <hint>
struct Diagnostic {
  Severity severity = Severity::error;  ///< error or warning
  SourceLoc loc;        ///< where in the spec, when known
  std::string layer;    ///< layer name, empty for model-level problems
  std::string context;  ///< short description of the layer, e.g. "conv 3x3"
  std::string message;  ///< what is wrong, with the arithmetic that failed
  std::vector<std::string> notes;  ///< further lines: where the input came from, what PyTorch would say
  std::string hint;     ///< how to fix it; empty when there is no obvious fix

  /// The diagnostic in the format above, ending with a newline.
  KILN_API std::string format() const;
};

/// Base of every exception kiln throws. `exit_code()` is what the CLI exits with.
class KILN_API Error : public std::runtime_error {
 public:
  /// An error with the message `what` and the CLI exit code `code`.
  explicit Error(const std::string& what, ExitCode code = ExitCode::runtime);
  /// The exit code the CLI exits with for this error.
  ExitCode exit_code() const noexcept { return code_; }

 private:
  ExitCode code_;
};

/// The model is invalid: every problem found in one pass. Exit code 1.
class KILN_API GraphError : public Error {
 public:
  /// what() is every diagnostic formatted (Diagnostic::format()), one after the other.
  explicit GraphError(std::vector<Diagnostic> diagnostics);
  /// Every problem found, errors and warnings, in source order.
  const std::vector<Diagnostic>& diagnostics() const noexcept { return diagnostics_; }

 private:
  std::vector<Diagnostic> diagnostics_;
};

/// A dataset file is missing or malformed. Exit code 1.
class KILN_API DataError : public Error {
 public:
  /// `record` is the 0-based record index, or -1 when the problem is not one record.
  DataError(std::string file, std::int64_t record, const std::string& message);
  /// The dataset file (or directory) at fault.
  const std::string& file() const noexcept { return file_; }
  /// The 0-based record index, or -1.
  std::int64_t record() const noexcept { return record_; }

 private:
  std::string file_;
  std::int64_t record_;
};

/// A checkpoint is missing, malformed or does not match the model. Exit code 1.
class KILN_API CheckpointError : public Error {
 public:
  /// `tensors`: the tensor names involved, if any.
  CheckpointError(std::string file, const std::string& message, std::vector<std::string> tensors = {});
  /// The checkpoint file at fault.
  const std::string& file() const noexcept { return file_; }
  /// The tensor names involved (mismatched, missing or unexpected), if any.
  const std::vector<std::string>& tensors() const noexcept { return tensors_; }

 private:
  std::string file_;
  std::vector<std::string> tensors_;
};

/// A command-line or API argument is out of range. Exit code 2.
class KILN_API UsageError : public Error {
 public:
  /// An error with exit code 2.
  explicit UsageError(const std::string& message);
};

/// A CUDA, cuDNN or cuBLAS call failed, or the device is missing or out of memory.
/// Exit code 3.
class KILN_API DeviceError : public Error {
 public:
  /// An error with exit code 3; `message` names the call, the layer and the library's own words.
  explicit DeviceError(const std::string& message);
};

/// Training diverged (a non-finite loss or gradient). Exit code 3.
class KILN_API DivergenceError : public Error {
 public:
  /// An error with exit code 3; `message` gives the step and the value.
  explicit DivergenceError(const std::string& message);
};

}  // namespace kiln
