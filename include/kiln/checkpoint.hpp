#pragma once

/// @file
/// safetensors files: reading, writing, and matching them against a graph's parameters.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kiln/export.hpp"
#include "kiln/graph.hpp"

namespace kiln {

/// Element types kiln reads from and writes to safetensors files. F16, BF16 and F64 are
/// read (and converted to fp32); kiln writes F32 and I64.
enum class TensorType : std::uint8_t { f32, i64 };

/// One tensor of a safetensors file. `f32` holds the values of floating tensors (any
/// floating dtype in the file, converted), `i64` those of integer tensors.
struct NamedTensor {
  std::string name;                  ///< e.g. `conv1.weight`
  TensorType type = TensorType::f32; ///< which of `f32` and `i64` holds the values
  std::vector<std::int64_t> dims;    ///< shape, outermost first (empty: a scalar)
  std::vector<float> f32;            ///< values of a floating tensor, row-major
  std::vector<std::int64_t> i64;     ///< values of an integer tensor, row-major
};

/// The contents of a safetensors file: tensors in file order and the `__metadata__` map.
struct SafetensorsFile {
  std::vector<NamedTensor> tensors;              ///< in file order
  std::map<std::string, std::string> metadata;   ///< the header's `__metadata__`

  /// The tensor called `name`, or nullptr.
  KILN_API const NamedTensor* find(const std::string& name) const;
};

/// Writes a safetensors file atomically: a temporary file beside it, fsync, rename, fsync
/// of the directory. A crash at any moment leaves either the old file or the new one.
/// Throws CheckpointError naming the file.
KILN_API void write_safetensors(const std::string& path, const SafetensorsFile& file);

/// Reads and validates a safetensors file: header length, JSON header, dtypes, shapes and
/// offsets inside the file, no overlaps, finite values. Throws CheckpointError naming the
/// file (and the tensor) on any problem: missing, truncated, corrupt.
KILN_API SafetensorsFile read_safetensors(const std::string& path);

/// Matches a file against a graph's parameters and buffers (PyTorch names and layouts;
/// `<bn>.num_batches_tracked` entries are accepted and ignored). Returns, for each entry of
/// Graph::params(), the matching tensor. Throws CheckpointError listing every mismatch:
/// missing names, unexpected names, and shapes that differ.
KILN_API std::vector<const NamedTensor*> match_weights(const Graph& graph, const SafetensorsFile& file,
                                                       const std::string& path);

}  // namespace kiln
