#pragma once

/// @file
/// Element types, layouts, backends and sample shapes.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kiln/export.hpp"

namespace kiln {

/// Element type of activations and parameters in a compiled plan.
enum class DType : std::uint8_t {
  f32,   ///< IEEE single precision ("fp32")
  f16,   ///< IEEE half precision ("fp16"): mixed precision with a dynamic loss scale
  bf16,  ///< bfloat16 ("bf16"): mixed precision
};

/// Memory layout of 4-D activations: NCHW (channels-first) or NHWC (channels-last).
enum class Layout : std::uint8_t {
  nchw,  ///< batch, channels, height, width (PyTorch's default)
  nhwc,  ///< batch, height, width, channels
};

/// The backend a graph is compiled for.
enum class Backend : std::uint8_t {
  cpu,   ///< the host: OpenBLAS and OpenMP, fp32, NCHW
  cuda,  ///< an NVIDIA GPU: cuDNN, cuBLAS and kiln's kernels
};

/// Which convolution kernels the CPU backend runs.
enum class CpuConv : std::uint8_t {
  automatic,  ///< per layer and pass, the one measured faster for its kind of shape ("auto"; see README)
  kiln,       ///< kiln's own: im2col + kiln's GEMM, and a direct kernel for depthwise convs
  onednn,     ///< oneDNN's wherever it runs the layer (UsageError in a build without oneDNN)
};

/// "fp32", "fp16", "bf16".
/// What a graph is compiled for: backend, batch size, dtype and layout (see compile()).
struct Target {
  Backend backend = Backend::cpu;  ///< the backend that runs the plan
  std::int64_t batch = 128;        ///< the largest batch of one forward pass
  DType dtype = DType::f32;        ///< activation and parameter type (the CPU backend emulates fp16 and bf16 in fp32)
  Layout layout = Layout::nchw;    ///< activation layout of the images
};

KILN_API std::string_view to_string(DType dtype);
/// "nchw", "nhwc".
KILN_API std::string_view to_string(Layout layout);
/// "cpu", "cuda".
KILN_API std::string_view to_string(Backend backend);
/// Bytes per element of `dtype`.
KILN_API std::int64_t size_of(DType dtype);
/// Parses "fp32" / "fp16" / "bf16" (and "f32", "float32", ...); nullopt if unknown.
KILN_API std::optional<DType> parse_dtype(std::string_view text);
/// Parses "nchw" / "nhwc"; nullopt if unknown.
KILN_API std::optional<Layout> parse_layout(std::string_view text);
/// "auto", "kiln", "onednn".
KILN_API std::string_view to_string(CpuConv conv);
/// Parses "auto" / "kiln" / "onednn"; nullopt if unknown.
KILN_API std::optional<CpuConv> parse_cpu_conv(std::string_view text);
/// Whether this build of kiln has oneDNN (CpuConv::onednn and, with auto, its kernels).
KILN_API bool has_onednn();

/// The shape of one sample, without the batch dimension: an image C x H x W (rank 3) or a
/// vector of N features (rank 1, stored in `c`).
struct Shape {
  int rank = 0;        ///< 3: an image, 1: a vector, 0: unset
  std::int64_t c = 0;  ///< channels, or the number of features of a vector
  std::int64_t h = 1;  ///< height (1 for a vector)
  std::int64_t w = 1;  ///< width (1 for a vector)

  /// An image shape C x H x W.
  static constexpr Shape chw(std::int64_t c, std::int64_t h, std::int64_t w) { return {3, c, h, w}; }
  /// A vector of `n` features.
  static constexpr Shape vec(std::int64_t n) { return {1, n, 1, 1}; }

  /// True for C x H x W.
  constexpr bool is_image() const { return rank == 3; }
  /// True for a vector of features.
  constexpr bool is_vector() const { return rank == 1; }
  /// Number of elements per sample. Graph validation guarantees it does not overflow.
  constexpr std::int64_t elements() const { return c * h * w; }
  /// "3x32x32" for an image, "10" for a vector.
  KILN_API std::string str() const;

  /// Same rank and sizes.
  constexpr bool operator==(const Shape&) const = default;
};

}  // namespace kiln
