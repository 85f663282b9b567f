// relu, leaky_relu, gelu, silu, sigmoid, tanh on CUDA: one element-wise kernel pair
// (cuda/kernels/elementwise.cu) over the KILN_HD math the CPU backend also uses. Backward
// reads the saved output or input, whichever the op's definition says it needs.
#include <fmt/format.h>

#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"
#include "graph/op_def.hpp"

namespace kiln::cuda {

namespace {

Status compile(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only(fmt::format("kiln kernel: {}", op_name(layer.op)), layer, target, out, failed);
}

void forward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  activation_forward(ctx.dtype, layer.op, static_cast<float>(layer.attrs.slope), run.x[0], run.y, ctx.dims(layer.shape).count(),
                     ctx.stream);
}

void backward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  void* dx = first_dx(run);
  if (!dx) return;
  const void* saved = detail::op_def(layer.op).backward_needs(layer).output ? run.y : run.x[0];
  activation_backward(ctx.dtype, layer.op, static_cast<float>(layer.attrs.slope), saved, run.dy, dx, first_accumulates(run),
                      ctx.dims(layer.shape).count(), ctx.stream);
}

constexpr CudaOp activation(OpKind kind) {
  return {.kind = kind,
          .supports = supported_everywhere,
          .compile = compile,
          .state_floats = no_state,
          .forward = forward,
          .backward = backward};
}

}  // namespace

const CudaOp kReluOp = activation(OpKind::relu);
const CudaOp kLeakyReluOp = activation(OpKind::leaky_relu);
const CudaOp kGeluOp = activation(OpKind::gelu);
const CudaOp kSiluOp = activation(OpKind::silu);
const CudaOp kSigmoidOp = activation(OpKind::sigmoid);
const CudaOp kTanhOp = activation(OpKind::tanh);

}  // namespace kiln::cuda
