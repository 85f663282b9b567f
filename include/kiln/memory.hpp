#pragma once

/// @file
/// The memory planner: where every activation and gradient of a step lives.

#include <cstdint>
#include <string>
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

/// Where every tensor of a step lives, for one batch size and dtype. Backends allocate the
/// activation arena once and place buffers at these offsets; buffers whose lifetimes do not
/// overlap share memory. Flatten is a view (in NCHW): its output shares its input's buffer.
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
  static constexpr std::int64_t alignment = 256;  ///< every offset is a multiple of this many bytes
};

/// Plans activation memory for `graph` at `batch`. In the NHWC layout a flatten of a
/// feature map reorders it into PyTorch's channel-major features, so it gets buffers of its
/// own instead of being a view. Throws UsageError when batch < 1, GraphError when the sizes
/// overflow 64 bits.
KILN_API MemoryPlan plan_memory(const Graph& graph, std::int64_t batch, DType dtype = DType::f32,
                                PlanMode mode = PlanMode::train, Layout layout = Layout::nchw);

/// Whether `layer` (a flatten) shares its input's memory in `layout`.
KILN_API bool flatten_is_view(const Graph& graph, const Layer& layer, Layout layout);

}  // namespace kiln
