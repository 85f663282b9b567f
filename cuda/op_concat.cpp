// concat on CUDA: each input copied into its channel range of the output, and back for the
// gradients (cuda/kernels/concat.cu).
#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"

namespace kiln::cuda {

namespace {

Status compile(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only("kiln kernel: concat", layer, target, out, failed);
}

void forward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  const math::Dims4 out = ctx.dims(layer.shape);
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < run.x.size(); ++i) {
    const math::Dims4 part = ctx.input(layer, i);
    concat_forward_part(ctx.dtype, run.x[i], part, run.y, out, offset, ctx.stream);
    offset += part.c;
  }
}

void backward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  const math::Dims4 out = ctx.dims(layer.shape);
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < run.dx.size(); ++i) {
    const math::Dims4 part = ctx.input(layer, i);
    if (run.dx[i]) concat_backward_part(ctx.dtype, run.dy, out, run.dx[i], part, offset, run.accumulate[i], ctx.stream);
    offset += part.c;
  }
}

}  // namespace

const CudaOp kConcatOp{.kind = OpKind::concat,
                       .supports = supported_everywhere,
                       .compile = compile,
                       .state_floats = no_state,
                       .forward = forward,
                       .backward = backward};

}  // namespace kiln::cuda
