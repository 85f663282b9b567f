#pragma once

// The blocks of a run's one allocation (kiln/memory.hpp's MemoryPlan::blocks), laid out
// from the planned activations and parameters plus what a backend needs besides.
#include <cstdint>
#include <span>
#include <vector>

#include "kiln/memory.hpp"

namespace kiln::detail {

// What a backend allocates beyond activations and parameter-shaped blocks, in bytes.
struct BackendMemory {
  std::vector<std::int64_t> state_bytes;  // per layer: kept from forward to backward
  std::int64_t workspace_bytes = 0;       // one workspace, sized to the largest need
  std::int64_t staging_bytes = 0;         // labels and images on their way in
  // fp16/bf16: the weights convs and linears read, rounded to the dtype (cpu_ops.hpp); on CUDA
  // also their gradients in the dtype (cuda_executor.hpp).
  std::int64_t rounded_weights_bytes = 0;
};

// Fills plan.blocks, plan.state_offsets and plan.total_bytes. Without `backend`: the
// parameter-shaped blocks and the activations only.
void lay_out_blocks(const Graph& graph, MemoryPlan& plan, const BackendMemory* backend);

// A layer a backend runs in another's slots: the CUDA backend runs a batchnorm and the
// activation reading it as one kernel at the batchnorm's forward and backward (cuda/fusion.hpp),
// so the activation's output is written at the batchnorm's forward and its gradient read at the
// batchnorm's backward. `layer` is the activation, `at` the batchnorm.
struct RunsAt {
  int layer = -1, at = -1;
};
// plan_memory, with the lifetimes of each `runs_at` layer's output and gradient stretched to
// the slots it runs in, so that nothing else is placed on them meanwhile.
MemoryPlan plan_memory(const Graph& graph, std::int64_t batch, DType dtype, PlanMode mode, Layout layout,
                       std::span<const RunsAt> runs_at);

}  // namespace kiln::detail
