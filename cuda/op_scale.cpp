// scale on CUDA: multiplies by a constant factor (cuda/kernels/elementwise.cu).
#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"

namespace kiln::cuda {

namespace {

Status compile(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only("kiln kernel: scale", layer, target, out, failed);
}

void forward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  scale_forward(ctx.dtype, static_cast<float>(layer.attrs.factor), run.x[0], run.y, ctx.dims(layer.shape).count(), ctx.stream);
}

void backward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  if (void* dx = first_dx(run))
    scale_backward(ctx.dtype, static_cast<float>(layer.attrs.factor), run.dy, dx, first_accumulates(run), ctx.dims(layer.shape).count(),
                   ctx.stream);
}

}  // namespace

const CudaOp kScaleOp{.kind = OpKind::scale,
                      .supports = supported_everywhere,
                      .compile = compile,
                      .state_floats = no_state,
                      .forward = forward,
                      .backward = backward};

}  // namespace kiln::cuda
