#include "cuda/op_table.hpp"

#include <array>
#include <fmt/format.h>
#include <stdexcept>
#include <utility>

#include "backend/executor.hpp"
#include "graph/op_def.hpp"

namespace kiln::cuda {

namespace {

using detail::kOpCount;

const std::array<const CudaOp*, kOpCount>& table() {
  static const std::array<const CudaOp*, kOpCount> ops = [] {
    const std::array<const CudaOp*, kOpCount> t = {
#define KILN_OP(op, Camel) &k##Camel##Op,
#include "graph/ops.def"
    };
    check_op_table(t.data(), t.size());
    return t;
  }();
  return ops;
}

void input_forward(LayerRun&, const StepContext&) {}  // staging writes the input

}  // namespace

void check_op_table(const CudaOp* const* ops, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    const auto kind = static_cast<OpKind>(i);
    if (!ops[i]) throw std::logic_error(fmt::format("CUDA op table: no entry for '{}'", op_name(kind)));
    if (ops[i]->kind != kind)
      throw std::logic_error(fmt::format("CUDA op table: slot {} ('{}') holds the entry of '{}'", i, op_name(kind),
                                         op_name(ops[i]->kind)));
    if (!ops[i]->supports || !ops[i]->compile || !ops[i]->state_floats || !ops[i]->forward || !ops[i]->backward)
      throw std::logic_error(fmt::format("CUDA op table: the entry of '{}' lacks a function", op_name(kind)));
  }
}

const CudaOp& cuda_op(OpKind kind) { return *table()[static_cast<std::size_t>(kind)]; }

Diagnostic cudnn_refusal(const Layer& layer, const std::string& what, const std::string& message) {
  Diagnostic d;
  d.loc = layer.loc;
  d.layer = layer.name;
  d.context = detail::describe_layer(layer, true);
  d.message = fmt::format("cuDNN rejects its {}: {}", what, message);
  d.hint = "kiln's shape rules accepted this layer, so kiln and cuDNN disagree here; please report it with this spec";
  return d;
}

PrepareContext prepare_context(const Graph& graph, const MemoryPlan& memory, const Layer& layer, ConvPlanCache& convs,
                               std::int64_t n, std::int64_t workspace_limit, int candidates) {
  PrepareContext ctx;
  ctx.graph = &graph;
  ctx.convs = &convs;
  ctx.n = n;
  ctx.workspace_limit = workspace_limit;
  ctx.candidates = candidates;
  ctx.output_grad = memory.gradient[static_cast<std::size_t>(layer.index)] >= 0;
  for (int in : layer.inputs) ctx.input_grads.push_back(memory.gradient[static_cast<std::size_t>(in)] >= 0);
  for (int p : layer.params) ctx.param_grads.push_back(detail::gets_gradient(graph, memory, static_cast<std::size_t>(p)));
  return ctx;
}

std::optional<std::string> supported_everywhere(const Layer&, DType, Layout) { return std::nullopt; }
std::int64_t no_state(const Layer&) { return 0; }
void no_backward(LayerRun&, const StepContext&) {}

Status output_tensor(const Layer& layer, const Target& target, std::string& failed) {
  TensorDesc y;
  const Shape& s = layer.shape;
  Status status = make_tensor(y, 1, {target.batch, s.c, s.h, s.w}, target.dtype, target.layout);
  if (!status.ok()) failed = "output tensor descriptor";
  return status;
}

Status compile_output_only(std::string path, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  out.path = std::move(path);
  Status s = output_tensor(layer, target, failed);
  out.tensors = s.ok() ? 1 : 0;
  return s;
}

namespace {

Status compile_input(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only("staging kernel (augment, normalize)", layer, target, out, failed);
}

}  // namespace

const CudaOp kInputOp{.kind = OpKind::input,
                      .supports = supported_everywhere,
                      .compile = compile_input,
                      .state_floats = no_state,
                      .forward = input_forward,
                      .backward = no_backward};

}  // namespace kiln::cuda
