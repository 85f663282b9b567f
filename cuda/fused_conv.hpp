#pragma once

// cuDNN's scale-bias-activation-conv-genstats training pattern for a FusedGroup with a
// convolution (cuda/fusion.hpp): the batchnorm's apply (a per-channel MUL by scale and ADD of
// bias, both [1,C,1,1] fp32: the executor would pass gamma/sqrt(var+eps) and
// beta - mean*scale), the activation as a pointwise op, the convolution, and GEN_STATS of its
// output (per-channel sum and sum of squares, [1,K,1,1] fp32, from which the next
// batchnorm's statistics follow without another pass). The weight gradient takes the same
// prologue on x ("wgrad with prologue"): the activated input is never stored.
//
// Host code: every descriptor and both operation graphs finalize without a device. Whether a
// GPU has an engine for them (cuDNN's runtime-fusion engines) only a GPU says.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/cudnn_backend.hpp"
#include "cuda/fusion.hpp"
#include "kiln/graph.hpp"
#include "kiln/types.hpp"

namespace kiln::cuda {

// The batchnorm apply and activation of one graph, as three pointwise operations on x.
struct FusedPrologue {
  TensorDesc scaled, shifted, activated;       // virtual, fp32, [N,C,H,W]
  BackendDescriptor mul_mode, add_mode, act_mode;  // CUDNN_BACKEND_POINTWISE_DESCRIPTOR
  BackendDescriptor mul, add, act;             // the operations, in that order
};

// The descriptors of a group's prologue-fused convolution, finalized on the host. Tensor
// uids: the convolution's own 1..6 (conv_descriptors: x, w, y, dx, dw, dy; x here is the
// batchnorm's input, whose shape the activation keeps), then scale 7, bias 8, sum 9, sqsum 10,
// and the virtual intermediates from 11. dx (uid 4) belongs to the unfused backward-data and
// is in neither graph.
struct FusedConvCompiled {
  int tensors = 0, operations = 0;  // in the two operation graphs, each counted once
  std::string path;  // "cuDNN graph: scale, bias, gelu -> conv fwd -> genstats; wgrad: ..."

  // conv_descriptors of the group's convolution, the function the unfused run calls: its x,
  // w, y, dy, dw and geometry are this pattern's (x has the activation's shape); its own
  // three operations, on an x that is not activated, are in neither graph.
  ConvOps conv;
  TensorDesc scale, bias, sum, sqsum;
  FusedPrologue fwd_prologue, wgrad_prologue;
  BackendDescriptor conv_fwd, genstats, fwd_graph;  // x -> ... -> y, sum, sqsum
  BackendDescriptor conv_wgrad, wgrad_graph;        // x, dy -> ... -> dw
};

// Builds and finalizes both operation graphs of `group` (which must have a convolution) at
// target.batch, dtype and layout. On refusal `failed` names the descriptor refused: by cuDNN
// (its words in the Status), or by kiln when the pattern cannot take the group (an activation
// cuDNN has no pointwise mode for, no convolution).
Status compile_fused_conv(const Graph& graph, const FusedGroup& group, const Target& target, FusedConvCompiled& out,
                          std::string& failed);

// What a finalized tensor descriptor holds, read back from cuDNN (cudnnBackendGetAttribute):
// the dims and strides kiln set, not its own record of them. cuDNN finalizes an operation
// graph whose channels disagree (a MUL of x [N,5,H,W] by a [1,8,1,1] scale passes), so a
// test checks these against the graph's shapes.
struct FinalizedTensor {
  std::vector<std::int64_t> dims, strides;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  bool is_virtual = false;
};
// Throws DeviceError when cuDNN cannot say (a descriptor not finalized).
FinalizedTensor read_tensor(const TensorDesc& tensor);

}  // namespace kiln::cuda
