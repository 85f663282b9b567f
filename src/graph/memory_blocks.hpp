#pragma once

// The blocks of a run's one allocation (kiln/memory.hpp's MemoryPlan::blocks), laid out
// from the planned activations and parameters plus what a backend needs besides.
#include <cstdint>
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

}  // namespace kiln::detail
