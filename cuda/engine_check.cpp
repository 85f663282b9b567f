// `kiln check --target cuda` on a GPU: whether cuDNN has an engine for every plan a run
// would build. It builds them the way CudaExecutor does (the op table's prepare, with the
// passes the memory plan needs) and returns each refusal instead of throwing it.
#include <fmt/format.h>

#include "cuda/conv_plan_cache.hpp"
#include "cuda/handles.hpp"
#include "cuda/op_table.hpp"
#include "kiln/cudnn.hpp"
#include "kiln/device.hpp"

namespace kiln {

std::vector<std::string> cudnn_unsupported(const Graph& graph, const Target& target) {
  if (cuda_device_count() == 0) throw DeviceError(cuda_unavailable_reason());
  const MemoryPlan memory = plan_memory(graph, target.batch, DType::f32, PlanMode::train, target.layout);
  cuda::CudnnHandle handle = cuda::make_cudnn_handle(nullptr);
  // kiln's default engine policy (no TF32, deterministic): what a run without --tf32 or
  // --nondeterministic would be offered.
  cuda::ConvPlanCache convs(handle.get(), target.dtype, target.layout, cuda::EnginePolicy{});  // destroyed before the handle
  std::vector<std::string> missing;
  for (const Layer& layer : graph.layers()) {
    const cuda::CudaOp& op = cuda::cuda_op(layer.op);
    if (!op.prepare) continue;
    try {
      op.prepare(layer, cuda::prepare_context(graph, memory, layer, convs, target.batch, -1, 1));
    } catch (const GraphError& e) {
      for (const Diagnostic& d : e.diagnostics()) missing.push_back(fmt::format("layer '{}': {}", d.layer, d.message));
    }
  }
  return missing;
}

}  // namespace kiln
