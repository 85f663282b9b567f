// flatten on CUDA: a view of its input where the memory is already in PyTorch's channel-major
// order (NCHW, or a 1x1 map); in an NHWC plan, a transposing copy (cuda/kernels/concat.cu).
#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"
#include "kiln/memory.hpp"

namespace kiln::cuda {

namespace {

Status compile(const Graph& graph, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  if (flatten_is_view(graph, layer, target.layout)) {
    out.path = "view of its input";
    return {};
  }
  return compile_output_only("kiln kernel: NHWC to NCHW copy", layer, target, out, failed);
}

void forward(LayerRun& run, const StepContext& ctx) {
  if (!run.view) nhwc_to_nchw(ctx.dtype, run.x[0], ctx.input(*run.layer, 0), run.y, ctx.stream);
}

void backward(LayerRun& run, const StepContext& ctx) {
  if (void* dx = first_dx(run); !run.view && dx)
    nchw_to_nhwc_grad(ctx.dtype, run.dy, ctx.input(*run.layer, 0), dx, first_accumulates(run), ctx.stream);
}

}  // namespace

const CudaOp kFlattenOp{.kind = OpKind::flatten,
                        .supports = supported_everywhere,
                        .compile = compile,
                        .state_floats = no_state,
                        .forward = forward,
                        .backward = backward,
                        .is_view = flatten_is_view};

}  // namespace kiln::cuda
