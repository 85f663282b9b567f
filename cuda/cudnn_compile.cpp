// compile_cudnn (`kiln check --target cuda`): every layer through its CUDA op table entry —
// supports, then compile, the functions CudaExecutor calls at construction — so that what
// check reports is what a run does. What cuDNN refuses here it would refuse at run time, so
// it is reported now, as a build error in cuDNN's own words, before any memory is allocated.
#include <fmt/format.h>

#include "cuda/fused_conv.hpp"
#include "cuda/fusion.hpp"
#include "cuda/op_table.hpp"
#include "graph/op_def.hpp"
#include "kiln/cudnn.hpp"

namespace kiln {

namespace {

// The fused groups (cuda/fusion.hpp), as a run makes them, and for those that end in a
// convolution, the cuDNN prologue-fused graphs finalized on the host.
void report_groups(const Graph& graph, const Target& target, CudnnReport& report) {
  const cuda::FusionPlan fusion = cuda::plan_fusion(graph);
  for (const cuda::FusedGroup& g : fusion.groups) {
    const Layer& bn = graph.layers()[static_cast<std::size_t>(g.bn)];
    const Layer& act = graph.layers()[static_cast<std::size_t>(g.act)];
    CudnnGroupReport row{g.name(graph), fmt::format("kiln kernel (batchnorm+{})", op_name(act.op)), "", g.reason};
    if (g.conv >= 0) {
      cuda::FusedConvCompiled compiled;
      std::string failed;
      const cuda::Status s = cuda::compile_fused_conv(graph, g, target, compiled, failed);
      row.cudnn_graph = s.ok() ? fmt::format("{}: descriptors finalized", compiled.path)
                               : fmt::format("not compiled: {} refused: {}", failed, s.message);
    }
    report.layers[static_cast<std::size_t>(bn.index)].group = row.name;
    report.layers[static_cast<std::size_t>(act.index)].group = row.name;
    report.layers[static_cast<std::size_t>(bn.index)].path = fmt::format("{} (fused with {})", row.kernel, act.name);
    report.layers[static_cast<std::size_t>(act.index)].path = fmt::format("fused into {}'s kernel", bn.name);
    report.groups.push_back(std::move(row));
  }
}

}  // namespace

CudnnReport compile_cudnn(const Graph& graph, const Target& target) {
  if (target.batch < 1) throw UsageError(fmt::format("batch must be at least 1, got {}", target.batch));
  CudnnReport report;
  std::vector<Diagnostic> rejected;
  const std::string where = fmt::format("batch {}, {}, {}", target.batch, to_string(target.dtype), to_string(target.layout));

  for (const Layer& layer : graph.layers()) {
    const cuda::CudaOp& op = cuda::cuda_op(layer.op);
    CudnnLayerReport row{layer.name, std::string(op_name(layer.op)), "", 0, ""};
    if (auto reason = op.supports(layer, target.dtype, target.layout)) {
      Diagnostic d;
      d.loc = layer.loc;
      d.layer = layer.name;
      d.context = detail::describe_layer(layer, true);
      d.message = fmt::format("the CUDA backend cannot run this layer ({}): {}", where, *reason);
      rejected.push_back(std::move(d));
      report.layers.push_back(std::move(row));
      continue;
    }
    cuda::OpCompiled compiled;
    std::string failed;
    cuda::Status s = op.compile(graph, layer, target, compiled, failed);
    if (!s.ok()) {
      rejected.push_back(cuda::cudnn_refusal(layer, fmt::format("{} ({})", failed, where), s.message));
    } else {
      row.path = std::move(compiled.path);
      row.descriptors = compiled.tensors + compiled.operations + (compiled.operations ? 1 : 0);
      report.tensors += compiled.tensors;
      report.operations += compiled.operations;
    }
    report.layers.push_back(std::move(row));
  }
  if (!rejected.empty()) throw GraphError(std::move(rejected));
  report_groups(graph, target, report);
  return report;
}

}  // namespace kiln
