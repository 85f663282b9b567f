#pragma once

/// @file
/// Datasets: the CIFAR-10 binary reader and writer, and the synthetic set.

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/export.hpp"
#include "kiln/graph.hpp"
#include "kiln/types.hpp"

namespace kiln {

/// Labelled uint8 images in CIFAR-10's record layout: each image is C planes of H x W bytes
/// (channel-major, like the binary files), its label one byte.
struct Dataset {
  std::string source;                    ///< directory or description, for messages
  Shape sample = Shape::chw(3, 32, 32);  ///< the shape of one image
  int classes = 10;                      ///< labels are 0 .. classes - 1
  std::vector<std::string> class_names;  ///< from batches.meta.txt, when present
  std::vector<std::uint8_t> images;      ///< size() * sample.elements() bytes
  std::vector<std::uint8_t> labels;      ///< size() bytes, each < classes

  /// Number of images.
  std::int64_t size() const { return static_cast<std::int64_t>(labels.size()); }
  /// The first byte of image `i` (0 <= i < size()).
  const std::uint8_t* image(std::int64_t i) const { return images.data() + i * sample.elements(); }
};

/// The training and test splits of a CIFAR-10-format directory.
struct Cifar10 {
  Dataset train;  ///< data_batch_1..5.bin
  Dataset test;   ///< test_batch.bin
};

/// Bytes of one CIFAR-10 binary record: a label byte and 3 x 32 x 32 pixel bytes.
inline constexpr std::int64_t cifar10_record_bytes = 3073;

/// Reads `dir`/data_batch_1..5.bin and test_batch.bin (and batches.meta.txt when present),
/// validating every file before returning: present, a whole number of records (any count),
/// every label 0..9. Throws DataError naming the file and the record.
KILN_API Cifar10 load_cifar10(const std::string& dir);

/// Options of the synthetic CIFAR-format set (`kiln synth`).
struct SynthOptions {
  std::int64_t train = 50000;  ///< training images
  std::int64_t test = 10000;   ///< test images
  std::uint64_t seed = 0;      ///< the same seed gives the same images
};

/// A learnable synthetic 10-class set in CIFAR-10's format: shapes, stripes, rings and
/// other patterns with random colours, positions, scale and noise. For machines without
/// CIFAR-10, and for tests. A pure function of the options.
KILN_API Cifar10 make_synthetic_cifar10(const SynthOptions& options);

/// Writes `data` as a CIFAR-10 binary directory: data_batch_1..5.bin (the training split
/// divided evenly), test_batch.bin and batches.meta.txt, each file written atomically.
/// Throws DataError naming the file on failure.
KILN_API void write_cifar10(const Cifar10& data, const std::string& dir);

/// Checks that a dataset's sample shape and class count match the model's `input` and
/// `classes` (throws GraphError naming both when they differ), and that the dataset itself
/// is whole: one image of `sample` bytes per label, every label below `classes` (throws
/// DataError naming the source and the record).
KILN_API void check_dataset(const Graph& graph, const Dataset& data);

}  // namespace kiln
