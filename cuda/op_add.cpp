// add on CUDA: an element-wise sum of its inputs; backward hands dy to each input
// (cuda/kernels/elementwise.cu).
#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"

namespace kiln::cuda {

namespace {

Status compile(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only("kiln kernel: add", layer, target, out, failed);
}

void forward(LayerRun& run, const StepContext& ctx) {
  const std::int64_t count = ctx.dims(run.layer->shape).count();
  add_n(ctx.dtype, run.x, run.y, count, ctx.stream);  // summed in fp32 and stored once, as the CPU
}

void backward(LayerRun& run, const StepContext& ctx) {
  const std::int64_t count = ctx.dims(run.layer->shape).count();
  for (std::size_t i = 0; i < run.dx.size(); ++i)
    if (run.dx[i]) copy_or_add(ctx.dtype, run.dy, run.dx[i], run.accumulate[i], count, ctx.stream);
}

}  // namespace

const CudaOp kAddOp{.kind = OpKind::add,
                    .supports = supported_everywhere,
                    .compile = compile,
                    .state_floats = no_state,
                    .forward = forward,
                    .backward = backward};

}  // namespace kiln::cuda
