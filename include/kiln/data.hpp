#pragma once

/// @file
/// Datasets: the readers and writers of CIFAR-10, CIFAR-100 and MNIST-layout IDX files,
/// format detection, and the synthetic sets.

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

/// The dataset formats kiln reads (`--format`), each giving the same Dataset.
enum class DataFormat : std::uint8_t {
  cifar10,        ///< CIFAR-10 binary: data_batch_1..5.bin, test_batch.bin; 3x32x32, 10 classes
  cifar100,       ///< CIFAR-100 binary: train.bin, test.bin; 3x32x32, 100 fine or 20 coarse classes
  mnist,          ///< MNIST IDX files (plain or .gz); 1x28x28, 10 classes
  fashion_mnist,  ///< Fashion-MNIST IDX files, MNIST's layout; 1x28x28, 10 classes
  folder,         ///< PNG/JPEG files in one folder per class; brought to the model's input size
};

/// The format's name as `--format` takes it: "cifar10", "cifar100", "mnist", "fashion-mnist".
KILN_API const char* format_name(DataFormat format);
/// The format named `name` (format_name()'s spelling); false when there is none.
KILN_API bool parse_format(const std::string& name, DataFormat& format);

/// Which of a CIFAR-100 record's two labels a dataset takes (`--label`).
enum class Cifar100Label : std::uint8_t {
  fine,    ///< 100 classes (fine_label_names.txt)
  coarse,  ///< 20 superclasses (coarse_label_names.txt)
};

/// The splits read from one data directory. `val` is empty unless a validation split was
/// held out of `train` (hold_out()).
struct Splits {
  DataFormat format = DataFormat::cifar10;  ///< what the files were (or what a synthetic set imitates)
  Dataset train;                            ///< the training split
  Dataset test;                             ///< the test split
  Dataset val;                              ///< held out of the training files; empty when none
};
/// The name from when CIFAR-10 was the only format.
using Cifar10 = Splits;

/// Options of load_data().
struct LoadOptions {
  bool detect = true;                         ///< detect the format from the files; false: `format`
  DataFormat format = DataFormat::cifar10;    ///< the format when `detect` is false
  Cifar100Label label = Cifar100Label::fine;  ///< CIFAR-100's label
  /// Image folders: the sample shape every image is brought to (the model's input).
  Shape sample = Shape::chw(3, 32, 32);
  /// Image folders: resize images of another size (resize_image()); false refuses them.
  bool resize = true;
  /// Image folders: where decoded images are cached, outside the data folder. Empty:
  /// $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln.
  std::string cache_dir;
  /// Image folders: no cache at all (decode every file on every load).
  bool no_cache = false;
};

/// A decoded image: 8-bit channels, C planes of H x W bytes (channel-major, CIFAR's layout);
/// C is 1 (grey) or 3 (RGB).
struct Image {
  int c = 0, h = 0, w = 0;
  std::vector<std::uint8_t> pixels;  ///< c * h * w bytes
};

/// Decodes a PNG or JPEG file (by its contents, not its name) with libpng / libjpeg-turbo.
/// Alpha is composited onto black (in linear light, as libpng's simplified API does), 16-bit
/// PNG samples v become round(v / 257) as in PIL and torchvision (not gamma-encoded as linear
/// light), palette PNGs become RGB and grey ones stay grey. Throws DataError naming the file
/// when it is not an image either library decodes.
KILN_API Image decode_image(const std::string& path);
/// The same from bytes in memory; `name` is what errors say.
KILN_API Image decode_image(const std::uint8_t* bytes, std::size_t size, const std::string& name);

/// Brings `image` to `sample` (C x H x W): grey to RGB by copying the grey plane into the
/// three channels, RGB to grey by ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B, rounded);
/// a different size by bilinear interpolation with half-pixel centres (as PIL's and
/// torchvision's bilinear resize without antialiasing), unless `resize` is false, when it
/// throws DataError naming `name` and both sizes.
KILN_API Image fit_image(const Image& image, const Shape& sample, bool resize, const std::string& name);

/// The format of the files in `dir`, by their names (data_batch_1.bin or test_batch.bin:
/// CIFAR-10; train.bin or test.bin: CIFAR-100; train-images-idx3-ubyte or
/// t10k-images-idx3-ubyte, plain or .gz: MNIST, or Fashion-MNIST when the last component of
/// `dir` contains "fashion" in any case). One file is enough to name the format, so that the
/// format's reader then names any file that is missing. Throws DataError naming the
/// directory, what was looked for and the first entries there, when it holds none of them.
KILN_API DataFormat detect_format(const std::string& dir);

/// Reads `dir` in its format (detected, or options.format), validating every file before
/// returning: present, a whole number of records (any count), every header field and label
/// in range. Throws DataError naming the file and the record.
KILN_API Splits load_data(const std::string& dir, const LoadOptions& options = {});

/// Bytes of one CIFAR-10 binary record: a label byte and 3 x 32 x 32 pixel bytes.
inline constexpr std::int64_t cifar10_record_bytes = 3073;

/// Reads `dir`/data_batch_1..5.bin and test_batch.bin (and batches.meta.txt when present),
/// validating every file before returning: present, a whole number of records (any count),
/// every label 0..9. Throws DataError naming the file and the record.
KILN_API Cifar10 load_cifar10(const std::string& dir);

/// Reads `dir`/train.bin and test.bin (3,074-byte records: coarse label, fine label,
/// pixels), taking the fine or the coarse label; class names from fine_label_names.txt /
/// coarse_label_names.txt when present. Validated like load_cifar10().
KILN_API Splits load_cifar100(const std::string& dir, Cifar100Label label = Cifar100Label::fine);

/// Reads MNIST-layout IDX files from `dir`: train-images-idx3-ubyte, train-labels-idx1-ubyte,
/// t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each plain or gzip-compressed (`.gz`).
/// Checks the big-endian headers (magic numbers, counts, 28x28) and that images and labels
/// agree. `format` is mnist or fashion_mnist (it names the set and its classes).
KILN_API Splits load_idx(const std::string& dir, DataFormat format);

/// Reads an image folder: DIR/train/<class>/ and DIR/test/<class>/ (the test classes a
/// subset of the training ones), or DIR/<class>/ alone (then everything is `train` and
/// `test` is empty). Classes are the training folders' names in sorted order; files in
/// sorted order. PNG and JPEG files (by extension, any case) are decoded and fitted to
/// `options.sample` (fit_image(), `options.resize`); other files are skipped and counted in
/// one line on stderr; an image file that does not decode throws DataError naming it. The
/// decoded images are cached (LoadOptions::cache_dir) and reused while each file's size and
/// modification time are unchanged; the data folder itself is only read.
KILN_API Splits load_image_folder(const std::string& dir, const LoadOptions& options);

/// Options of the synthetic CIFAR-format set (`kiln synth`).
struct SynthOptions {
  std::int64_t train = 50000;  ///< training images
  std::int64_t test = 10000;   ///< test images
  std::uint64_t seed = 0;      ///< the same seed gives the same images
  DataFormat format = DataFormat::cifar10;  ///< whose sample shape and classes the set has
};

/// A learnable synthetic set in `options.format`'s shape and classes (make_synthetic_cifar10()
/// for cifar10). mnist, fashion_mnist: the same pattern families in grey levels at 1x28x28,
/// named as the format's classes. cifar100: 100 fine classes, each a pattern family in one
/// of ten foreground hues, numbered so that CIFAR-100's official superclass mapping (which
/// write_data() uses for the coarse label) groups five hues of one family. A pure function
/// of the options.
KILN_API Splits make_synthetic(const SynthOptions& options);

/// Writes `data` in its format (data.format) to `dir`, as the official files are laid out,
/// each file written atomically; load_data() reads it back. IDX files are written plain
/// (uncompressed). CIFAR-100 needs the fine labels (classes == 100): each record's coarse
/// label is the official superclass of its fine one. Refuses, before writing anything, what
/// the reader would reject; throws DataError naming the file.
KILN_API void write_data(const Splits& data, const std::string& dir);

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

/// check_dataset() on every split, with the format named: a model built for another
/// format's images (1x28x28 MNIST fed 3x32x32 CIFAR, or the reverse) is a GraphError that
/// names both shapes and the format, at the model's input line.
KILN_API void check_data(const Graph& graph, const Splits& data);

/// Per-channel mean and standard deviation of a dataset's pixels scaled to [0, 1] (the
/// normalization of formats without published constants).
struct ChannelStats {
  std::vector<float> mean, std;
};
KILN_API ChannelStats channel_stats(const Dataset& data);

/// The normalization a format trains with when the spec gives none: CIFAR-10's published
/// constants for cifar10, channel_stats() of the training split otherwise.
KILN_API ChannelStats default_normalization(const Splits& data);

/// Moves `count` images of `data.train` into `data.val`: those at the first `count`
/// positions of a permutation drawn from `seed` (a function of seed and the split's size),
/// both parts keeping the files' order. Throws UsageError when `count` leaves no
/// validation or no training image, or a split was already held out.
KILN_API void hold_out(Splits& data, std::int64_t count, std::uint64_t seed);

}  // namespace kiln
