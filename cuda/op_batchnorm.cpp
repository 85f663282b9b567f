// batchnorm on CUDA: kiln's kernels (cuda/kernels/batchnorm.cu); its state is the batch mean
// and inverse standard deviation saved by forward for backward.
#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"

namespace kiln::cuda {

namespace {

Status compile(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only("kiln kernel: batchnorm", layer, target, out, failed);
}

std::int64_t state_floats(const Layer& layer) { return 2 * layer.shape.c; }

void forward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  const Attrs& a = layer.attrs;
  batchnorm_forward(ctx.dtype, ctx.train, run.x[0], ctx.dims(layer.shape), run.y, f32(run.params[0]), f32(run.params[1]),
                    f32(run.params[2]), f32(run.params[3]), run.state, run.state + layer.shape.c, static_cast<float>(a.momentum),
                    static_cast<float>(a.eps), ctx.stream);
}

void backward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  batchnorm_backward(ctx.dtype, ctx.train, run.x[0], run.dy, ctx.dims(layer.shape), first_dx(run), first_accumulates(run),
                     f32(run.params[0]), f32(run.grads[0]), f32(run.grads[1]), run.state, run.state + layer.shape.c,
                     f32(run.params[2]), f32(run.params[3]),
                     static_cast<float>(layer.attrs.eps), ctx.stream);
}

}  // namespace

const CudaOp kBatchnormOp{.kind = OpKind::batchnorm,
                          .supports = supported_everywhere,
                          .compile = compile,
                          .state_floats = state_floats,
                          .forward = forward,
                          .backward = backward};

}  // namespace kiln::cuda
