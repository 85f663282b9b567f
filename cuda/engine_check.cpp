// `kiln check --target cuda` on a GPU: whether cuDNN has an engine for every plan a run
// would build. It builds them the way CudaExecutor does (the op table's prepare, with the
// passes the memory plan needs) and returns each refusal instead of throwing it.
#include <fmt/format.h>

#include "cuda/conv_plan_cache.hpp"
#include "cuda/exec_plan.hpp"
#include "cuda/fused_conv.hpp"
#include "cuda/fusion.hpp"
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

// The fused groups' cuDNN graphs (cuda/fused_conv.hpp) through the same engine search a
// run's plans go through (ExecPlan, kiln's default engine policy).
std::vector<std::string> cudnn_fused_engines(const Graph& graph, const Target& target) {
  if (cuda_device_count() == 0) throw DeviceError(cuda_unavailable_reason());
  cuda::CudnnHandle handle = cuda::make_cudnn_handle(nullptr);
  std::vector<std::string> lines;
  for (const cuda::FusedGroup& group : cuda::plan_fusion(graph).groups) {
    if (group.conv < 0) continue;
    cuda::FusedConvCompiled c;
    std::string failed;
    if (cuda::Status s = cuda::compile_fused_conv(graph, group, target, c, failed); !s.ok()) {
      lines.push_back(fmt::format("{}: not compiled: {} refused: {}", group.name(graph), failed, s.message));
      continue;
    }
    auto engine = [&](std::span<const cudnnBackendDescriptor_t> ops, const char* pass) {
      try {
        return cuda::ExecPlan(handle.get(), ops, target.dtype, cuda::EnginePolicy{}, -1, 1, group.name(graph) + " " + pass)
            .describe();
      } catch (const cuda::NoEngineError& e) {
        return fmt::format("no engine ({})", e.reason());
      }
    };
    const cuda::FusedPrologue& f = c.fwd_prologue;
    const cuda::FusedPrologue& w = c.wgrad_prologue;
    const cudnnBackendDescriptor_t fwd[] = {f.mul.get(), f.add.get(), f.act.get(), c.conv_fwd.get(), c.genstats.get()};
    const cudnnBackendDescriptor_t wgrad[] = {w.mul.get(), w.add.get(), w.act.get(), c.conv_wgrad.get()};
    lines.push_back(fmt::format("{}: forward+genstats {}; wgrad with prologue {}", group.name(graph),
                                engine(fwd, "forward"), engine(wgrad, "wgrad")));
  }
  return lines;
}

}  // namespace kiln
