// groupnorm on CUDA: kiln's kernels (cuda/kernels/groupnorm.cu). No state: backward
// recomputes each group's statistics from the input, which it keeps (backward_needs).
#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"

namespace kiln::cuda {

namespace {

Status compile(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only("kiln kernel: groupnorm", layer, target, out, failed);
}

void forward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  groupnorm_forward(ctx.dtype, run.x[0], ctx.dims(layer.shape), layer.attrs.groups, f32(run.params[0]), f32(run.params[1]), run.y,
                    static_cast<float>(layer.attrs.eps), ctx.stream);
}

void backward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  groupnorm_backward(ctx.dtype, run.x[0], run.dy, ctx.dims(layer.shape), layer.attrs.groups, f32(run.params[0]),
                     first_dx(run), first_accumulates(run), f32(run.grads[0]), f32(run.grads[1]), static_cast<float>(layer.attrs.eps), ctx.stream);
}

}  // namespace

const CudaOp kGroupnormOp{.kind = OpKind::groupnorm,
                          .supports = supported_everywhere,
                          .compile = compile,
                          .state_floats = no_state,
                          .forward = forward,
                          .backward = backward};

}  // namespace kiln::cuda
