// upsample on CUDA: nearest-neighbour by integer factors (cuda/kernels/upsample.cu).
#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"

namespace kiln::cuda {

namespace {

Status compile(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only("kiln kernel: upsample", layer, target, out, failed);
}

void forward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  upsample_forward(ctx.dtype, run.x[0], ctx.input(layer, 0), run.y, ctx.dims(layer.shape), layer.attrs.scale.h, layer.attrs.scale.w,
                   ctx.stream);
}

void backward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  if (void* dx = first_dx(run))
    upsample_backward(ctx.dtype, run.dy, ctx.dims(layer.shape), dx, ctx.input(layer, 0), first_accumulates(run), layer.attrs.scale.h,
                      layer.attrs.scale.w, ctx.stream);
}

}  // namespace

const CudaOp kUpsampleOp{.kind = OpKind::upsample,
                         .supports = supported_everywhere,
                         .compile = compile,
                         .state_floats = no_state,
                         .forward = forward,
                         .backward = backward};

}  // namespace kiln::cuda
