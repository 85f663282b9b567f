// dropout on CUDA: masks drawn per element, by its logical NCHW index in either layout, from
// the (seed, step, layer) stream that the CPU backend draws from too (cuda/kernels/elementwise.cu); in evaluation, a copy (or nothing,
// where the planner gave the output its input's memory).
#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"
#include "math/rng.hpp"

namespace kiln::cuda {

namespace {

// The CPU's key, math::stream_key(step, kStreamDropout, layer), made by the kernel from the
// step in device memory.
DropoutKey mask_key(const std::uint64_t* step, const Layer& layer) { return {step, static_cast<std::uint64_t>(layer.index)}; }

Status compile(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only("kiln kernel: dropout", layer, target, out, failed);
}

void forward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  const float p = static_cast<float>(layer.attrs.p);
  const math::Dims4 d = ctx.dims(layer.shape);
  if (ctx.train && p > 0) dropout_forward(ctx.dtype, p, mask_key(ctx.step, layer), run.x[0], run.y, d, ctx.stream);
  else if (run.y != run.x[0]) copy_or_add(ctx.dtype, run.x[0], run.y, false, d.count(), ctx.stream);
}

void backward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  void* dx = first_dx(run);
  if (!dx) return;
  const float p = static_cast<float>(layer.attrs.p);
  const math::Dims4 d = ctx.dims(layer.shape);
  if (ctx.train && p > 0) dropout_backward(ctx.dtype, p, mask_key(ctx.step, layer), run.dy, dx, first_accumulates(run), d, ctx.stream);
  else copy_or_add(ctx.dtype, run.dy, dx, first_accumulates(run), d.count(), ctx.stream);
}

}  // namespace

const CudaOp kDropoutOp{.kind = OpKind::dropout,
                        .supports = supported_everywhere,
                        .compile = compile,
                        .state_floats = no_state,
                        .forward = forward,
                        .backward = backward};

}  // namespace kiln::cuda
