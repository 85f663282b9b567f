#pragma once

/// @file
/// Compilation targets, and the cuDNN graph-API descriptors of a graph (`kiln check
/// --target cuda`).

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/export.hpp"
#include "kiln/graph.hpp"
#include "kiln/types.hpp"

namespace kiln {

/// How one layer maps onto cuDNN.
struct CudnnLayerReport {
  std::string layer;    ///< the layer's name
  std::string op;       ///< its op, as spelled in a spec
  /// What runs: "graph API: conv fwd, bwd-data, bwd-filter", "cuBLAS GEMM; tensor
  /// descriptors", "kiln kernel: pooling (maxpool)", "kiln kernel: ceil-mode pooling
  /// (cuDNN has no ceil mode)", "view of its input", ...
  std::string path;
  int descriptors = 0;  ///< backend descriptors finalized for this layer
  /// The fused group the layer runs in ("bn1+gelu1 -> conv2"), empty when it runs alone.
  std::string group;
};

/// A fused group: a batchnorm and the activation reading it, run as one kernel each way,
/// and the convolution reading that activation where there is one (cuDNN's
/// scale-bias-activation-conv-genstats pattern).
struct CudnnGroupReport {
  std::string name;    ///< "bn1+gelu1 -> conv2"
  std::string kernel;  ///< what runs it: "kiln kernel (batchnorm+gelu)"
  /// The cuDNN prologue-fused convolution's graphs: "descriptors finalized (forward with
  /// genstats, wgrad with prologue)", or why not; empty without a convolution.
  std::string cudnn_graph;
  std::string reason;  ///< why the group runs as it does
};

/// What compile_cudnn() finalized.
struct CudnnReport {
  std::vector<CudnnLayerReport> layers;  ///< one per layer, in graph order
  std::vector<CudnnGroupReport> groups;  ///< the fused groups, in graph order
  int tensors = 0;      ///< tensor descriptors finalized
  int operations = 0;   ///< operation descriptors finalized
};

/// True when this libkiln was built with the CUDA backend (CUDA toolkit, cuDNN, cuBLAS).
KILN_API bool built_with_cuda();

/// "CUDA 13.0, cuDNN 9.19.0" for a CUDA build, "CPU only" otherwise.
KILN_API std::string build_description();

/// Compiles every layer of `graph` for the CUDA backend at `target`, through the same op
/// table entries a CUDA run uses, and finalizes its cuDNN graph-API (backend) descriptors;
/// needs no GPU. Convolutions get their forward, backward-data and backward-filter
/// operations; every other output a tensor descriptor. Throws GraphError naming the layer
/// and quoting cuDNN's own message if cuDNN rejects what kiln accepted, DeviceError when
/// built without CUDA.
KILN_API CudnnReport compile_cudnn(const Graph& graph, const Target& target);

}  // namespace kiln

namespace kiln {

/// On a GPU: asks cuDNN for an engine for every convolution pass (forward, backward-data,
/// backward-filter) of `graph` at `target` and returns one line per pass that has none
/// (empty: every layer is supported). Throws DeviceError without a device.
KILN_API std::vector<std::string> cudnn_unsupported(const Graph& graph, const Target& target);

/// On a GPU: for each fused group that ends in a convolution, the engines cuDNN offers (under
/// kiln's default engine policy) for its prologue-fused forward-with-genstats graph and its
/// weight-gradient-with-prologue graph, or why none: one line per group. The executor does
/// not run these graphs yet; this says whether it could. Throws DeviceError without a device.
KILN_API std::vector<std::string> cudnn_fused_engines(const Graph& graph, const Target& target);

}  // namespace kiln
