// conv on CUDA: cuDNN graph-API convolutions (forward, backward-data, backward-filter), the
// bias by kiln's kernel (cuda/kernels/bias.cu).
#include "cuda/conv_plan_cache.hpp"
#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"

namespace kiln::cuda {

namespace {

Status compile(const Graph& graph, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  ConvOps ops;
  Status s = conv_descriptors(ops, graph, layer, target.batch, target.dtype, target.layout, failed);
  if (!s.ok()) return s;
  out.path = "graph API: conv fwd, bwd-data, bwd-filter";
  out.tensors = 6;
  out.operations = 3;
  return s;
}

void prepare(const Layer& layer, const PrepareContext& ctx) {
  // Backward passes read dy: a layer whose output does not reach the loss (no dy) runs
  // forward only, and a plan bound to a null dy is never built.
  const bool data_grad = ctx.output_grad && ctx.input_grads.at(0);
  const bool filter_grad = ctx.output_grad && ctx.param_grads.at(0);
  ctx.convs->build(*ctx.graph, layer, ctx.n, data_grad, filter_grad, ctx.workspace_limit, ctx.candidates);
}

void bind(const Layer& layer, const LayerRun& run, const BindContext& ctx) {
  ConvPlans* p = ctx.convs->find(layer.index, ctx.n);
  ConvBinding b;
  b.x = run.x[0];
  b.w = run.params[0];
  b.y = run.y;
  b.dx = first_accumulates(run) ? ctx.scratch : first_dx(run);
  b.dw = run.grads[0];
  b.dy = run.dy;
  b.workspace = ctx.workspace;
  ctx.convs->bind(*p, b);
}

// In bf16/fp16 the bias is added to the stored (rounded) convolution, and an accumulated dx
// adds a stored one: each rounds twice where the CPU oracle rounds once (within a unit in
// the last place; a bias fused into cuDNN's graph would round once).
void forward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  ctx.convs->find(layer.index, ctx.n)->fwd->execute(ctx.cudnn);
  if (layer.attrs.bias) bias_forward(ctx.dtype, run.y, run.params[1], ctx.dims(layer.shape), ctx.stream);
}

void backward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  ConvPlans& p = *ctx.convs->find(layer.index, ctx.n);
  if (void* dx = first_dx(run); p.bwd_data && dx) {
    p.bwd_data->execute(ctx.cudnn);
    if (first_accumulates(run)) copy_or_add(ctx.dtype, ctx.scratch, dx, true, ctx.input(layer, 0).count(), ctx.stream);
  }
  if (p.bwd_filter && run.grads[0]) p.bwd_filter->execute(ctx.cudnn);
  if (layer.attrs.bias && run.grads[1]) bias_backward(ctx.dtype, run.dy, ctx.dims(layer.shape), run.grads[1], ctx.stream);
}

}  // namespace

const CudaOp kConvOp{.kind = OpKind::conv,
                     .supports = supported_everywhere,
                     .compile = compile,
                     .state_floats = no_state,
                     .forward = forward,
                     .backward = backward,
                     .prepare = prepare,
                     .bind = bind,
                     .krsc_weight_in_nhwc = true,
                     .dx_via_scratch = true};

}  // namespace kiln::cuda
