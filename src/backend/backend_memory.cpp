// plan_memory for a target: the planner's activations and parameters, and what the
// target's backend allocates besides (per-layer state, workspace, staging).
#include <algorithm>

#include "graph/memory_blocks.hpp"
#include "backend/cpu_ops.hpp"

namespace kiln {

namespace {

// What the CPU backend needs for `graph` at `batch` in `layout`, from its op table.
detail::BackendMemory cpu_memory(const Graph& graph, std::int64_t batch, Layout layout) {
  detail::BackendMemory needs;
  auto layers = graph.layers();
  std::int64_t workspace_floats = 0;
  for (const Layer& layer : layers) {
    const detail::CpuOp& op = detail::cpu_op(layer.op);
    needs.state_bytes.push_back(op.state_floats ? op.state_floats(layer, batch) * 4 : 0);
    if (op.workspace_floats) workspace_floats = std::max(workspace_floats, op.workspace_floats(layer, layers, batch, layout));
  }
  needs.workspace_bytes = workspace_floats * 4;
  needs.staging_bytes = batch * 4;  // the labels, as int32; images are staged into the input activation
  return needs;
}

}  // namespace

MemoryPlan plan_memory(const Graph& graph, const Target& target) {
  // The CPU stores fp32 whatever the dtype (it emulates fp16 and bf16 by rounding), plus a
  // rounded copy of the weights convs and linears read in those.
  const bool cpu = target.backend == Backend::cpu;
  MemoryPlan plan = plan_memory(graph, target.batch, cpu ? DType::f32 : target.dtype, PlanMode::train, target.layout);
  // The CUDA backend sizes its workspace with cuDNN on the device, and its state and staging
  // with it: only the planner's blocks are known here.
  if (cpu) {
    detail::BackendMemory needs = cpu_memory(graph, target.batch, target.layout);
    const auto layers = graph.layers();
    if (target.dtype != DType::f32 && std::any_of(layers.begin(), layers.end(), detail::params_in_dtype))
      needs.rounded_weights_bytes = plan.param_block_bytes;
    detail::lay_out_blocks(graph, plan, &needs);
  }
  return plan;
}

}  // namespace kiln
