// batchnorm on CUDA: kiln's kernels (cuda/kernels/batchnorm.cu); its state is the batch mean
// and inverse standard deviation saved by forward for backward. Fused with the activation
// that reads it (cuda/fusion.hpp) it runs as one kernel each way.
#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"

namespace kiln::cuda {

namespace {

Status compile(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only("kiln kernel: batchnorm", layer, target, out, failed);
}

// The batch mean and inverse standard deviation, then (used when the layer runs fused with
// its activation) the per-channel scale and shift forward applied.
std::int64_t state_floats(const Layer& layer) { return 4 * layer.shape.c; }

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

void fused_bn_act_forward(LayerRun& bn, const LayerRun& act, const StepContext& ctx, bool store) {
  const Layer& layer = *bn.layer;
  const Attrs& a = layer.attrs;
  batchnorm_act_forward(ctx.dtype, ctx.train, act.layer->op, static_cast<float>(act.layer->attrs.slope), bn.x[0],
                        ctx.dims(layer.shape), store ? act.y : nullptr, f32(bn.params[0]), f32(bn.params[1]), f32(bn.params[2]),
                        f32(bn.params[3]), bn.state, bn.state + layer.shape.c, bn.state + 2 * layer.shape.c,
                        static_cast<float>(a.momentum),
                        static_cast<float>(a.eps), ctx.stream);
}

void fused_bn_act_backward(LayerRun& bn, const LayerRun& act, const StepContext& ctx) {
  const Layer& layer = *bn.layer;
  batchnorm_act_backward(ctx.dtype, ctx.train, act.layer->op, static_cast<float>(act.layer->attrs.slope), bn.x[0], act.dy,
                         ctx.dims(layer.shape), first_dx(bn), first_accumulates(bn), f32(bn.params[0]), f32(bn.params[1]),
                         f32(bn.grads[0]), f32(bn.grads[1]), bn.state, bn.state + layer.shape.c,
                         bn.state + 2 * layer.shape.c, f32(bn.params[2]),
                         f32(bn.params[3]), static_cast<float>(layer.attrs.eps), ctx.stream);
}

const CudaOp kBatchnormOp{.kind = OpKind::batchnorm,
                          .supports = supported_everywhere,
                          .compile = compile,
                          .state_floats = state_floats,
                          .forward = forward,
                          .backward = backward};

}  // namespace kiln::cuda
