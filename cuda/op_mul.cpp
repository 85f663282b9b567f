// mul on CUDA: the element-wise product, the second input possibly one value per channel
// (cuda/kernels/mul.cu).
#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"

namespace kiln::cuda {

namespace {

Status compile(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only("kiln kernel: mul", layer, target, out, failed);
}

bool per_channel(const Layer& layer, const StepContext& ctx) {
  const auto all = ctx.graph->layers();
  return all[static_cast<std::size_t>(layer.inputs[1])].shape != all[static_cast<std::size_t>(layer.inputs[0])].shape;
}

void forward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  mul_forward(ctx.dtype, run.x[0], run.x[1], per_channel(layer, ctx), ctx.dims(layer.shape), run.y, ctx.stream);
}

void backward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  mul_backward(ctx.dtype, run.x[0], run.x[1], per_channel(layer, ctx), run.dy, ctx.dims(layer.shape), run.dx[0], run.accumulate[0],
               run.dx[1], run.accumulate[1], ctx.stream);
}

}  // namespace

const CudaOp kMulOp{.kind = OpKind::mul,
                    .supports = supported_everywhere,
                    .compile = compile,
                    .state_floats = no_state,
                    .forward = forward,
                    .backward = backward};

}  // namespace kiln::cuda
