#pragma once

/// @file
/// The memory planner: where every activation and gradient of a step lives.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/export.hpp"
#include "kiln/graph.hpp"
#include "kiln/types.hpp"

namespace kiln {

/// Training keeps activations until the backward pass has used them and adds gradient
/// buffers; evaluation frees each activation after its last reader.
enum class PlanMode : std::uint8_t {
  train,  ///< forward, loss and backward
  eval,   ///< forward only
};

/// One activation or activation-gradient buffer of a memory plan. Steps count the
/// schedule: forward of layer i at step i, the loss at step n (n = number of layers), the
/// backward of layer i at step 2n - i. The buffer is live on steps [first, last].
struct Buffer {
  /// What a buffer holds.
  enum class Kind : std::uint8_t {
    activation,  ///< a layer's output
    gradient,    ///< the gradient of the loss with respect to a layer's output
  };
  Kind kind = Kind::activation;  ///< what it holds
  int layer = 0;              ///< the layer whose output (or output gradient) it holds
  std::int64_t bytes = 0;     ///< size, padded to MemoryPlan::alignment
  std::int64_t offset = 0;    ///< byte offset in the activation arena
  int first = 0;              ///< the first step it is live on
  int last = 0;               ///< the last step it is live on
};

/// A contiguous region of the one allocation a run makes: "parameters", "gradients",
/// "momentum", "averages" (lookahead / EMA), "activations", "state" (what layers keep
/// from forward to backward), "workspace", "staging" (the batch's labels and images on
/// their way in).
struct MemoryBlock {
  std::string name;         ///< what it holds
  std::int64_t offset = 0;  ///< from the start of the allocation, a multiple of MemoryPlan::alignment
  std::int64_t bytes = 0;   ///< its size, padded to MemoryPlan::alignment
};

/// Where everything a run needs lives, for one batch size and dtype. A backend makes one
/// allocation of `total_bytes` and binds every tensor at these offsets: activations and
/// their gradients in the "activations" block (buffers whose lifetimes do not overlap
/// share memory; flatten is a view in NCHW), every parameter at `param_offsets` inside the
/// parameter-shaped blocks, each layer's state at `state_offsets`.
struct MemoryPlan {
  std::int64_t batch = 0;              ///< the batch size planned for
  DType dtype = DType::f32;            ///< element type of the buffers
  PlanMode mode = PlanMode::train;     ///< training or evaluation
  std::vector<Buffer> buffers;         ///< every activation and gradient buffer
  /// Per layer, the index in `buffers` of its output, and of its output gradient (-1 when
  /// no gradient is needed: no trainable parameter at or before the layer, or an output
  /// that never reaches the loss — such a layer runs forward only, and its parameters get
  /// no gradient and no optimizer step, as in PyTorch).
  std::vector<int> activation;         ///< per layer: its output's buffer
  std::vector<int> gradient;           ///< per layer: its output gradient's buffer, or -1
  /// Per layer and input slot: true when the backward pass adds into that input's gradient
  /// buffer because an earlier-running backward already wrote it (a tensor read twice).
  std::vector<std::vector<bool>> accumulate;
  std::int64_t param_bytes = 0;       ///< parameters and batchnorm buffers
  std::int64_t grad_bytes = 0;        ///< gradients of trainable parameters that reach the loss
  std::int64_t activation_sum = 0;    ///< all buffers, as if none were shared
  std::int64_t live_peak = 0;         ///< most bytes live at one step (a lower bound)
  std::int64_t arena_bytes = 0;       ///< size of the activation arena after placement
  /// Per Graph::params(): its byte offset inside each parameter-shaped block (parameters,
  /// gradients, momentum, averages all share this layout). Every offset is a multiple of
  /// `alignment`, so every weight starts aligned as cuDNN and vector loads want.
  std::vector<std::int64_t> param_offsets;
  std::int64_t param_block_bytes = 0;  ///< one parameter-shaped block: every parameter, each aligned
  /// Per layer: the byte offset of its state inside the "state" block (-1: none).
  std::vector<std::int64_t> state_offsets;
  std::vector<MemoryBlock> blocks;     ///< the allocation, block by block, in order
  std::int64_t total_bytes = 0;        ///< the whole allocation: what a run allocates
  static constexpr std::int64_t alignment = 256;  ///< every offset is a multiple of this many bytes

  /// The block called `name`, or nullptr.
  const MemoryBlock* block(std::string_view name) const {
    for (const MemoryBlock& b : blocks)
      if (b.name == name) return &b;
    return nullptr;
  }
};

/// Plans the activations and parameters of `graph` at `batch`, whatever the backend: its
/// blocks are the parameter-shaped ones and the activations (no state, workspace or
/// staging). In the NHWC layout a flatten of a feature map reorders it into PyTorch's
/// channel-major features, so it gets buffers of its own instead of being a view. Throws
/// UsageError when batch < 1, GraphError when the sizes overflow 64 bits.
KILN_API MemoryPlan plan_memory(const Graph& graph, std::int64_t batch, DType dtype = DType::f32,
                                PlanMode mode = PlanMode::train, Layout layout = Layout::nchw);

/// Everything a run of `graph` on `target` allocates (training): the plan above with the
/// backend's per-layer state, workspace and staging. The CPU backend allocates exactly
/// `total_bytes` (`kiln check` prints it). For CUDA the cuDNN workspace is chosen by cuDNN
/// on the device when the plan is compiled, so its block here is 0 bytes.
KILN_API MemoryPlan plan_memory(const Graph& graph, const Target& target);

/// Whether `layer` (a flatten) shares its input's memory in `layout`.
KILN_API bool flatten_is_view(const Graph& graph, const Layer& layer, Layout layout);

}  // namespace kiln
