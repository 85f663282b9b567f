// maxpool, avgpool, global_avgpool, global_maxpool on CUDA: kiln's kernels
// (cuda/kernels/pool.cu) in floor and ceil mode alike, so that padding and clipped windows
// average exactly as PyTorch's do. cuDNN runs no pooling here, and check says so.
#include <fmt/format.h>

#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"

namespace kiln::cuda {

namespace {

PoolGeometry pool_geometry(const Attrs& a) { return {a.kernel.h, a.kernel.w, a.stride->h, a.stride->w, a.pad.top, a.pad.left}; }

// Whether the layer's output is larger than floor mode would give (ceil mode adding a
// window): cuDNN has no such mode, one reason the kernel is kiln's.
bool beyond_floor(const Graph& graph, const Layer& layer) {
  const Attrs& a = layer.attrs;
  const Shape& in = graph.layers()[static_cast<std::size_t>(layer.inputs[0])].shape;
  const Hw s = a.stride.value_or(a.kernel);
  const std::int64_t fh = (in.h + 2 * a.pad.top - a.kernel.h) / s.h + 1;
  const std::int64_t fw = (in.w + 2 * a.pad.left - a.kernel.w) / s.w + 1;
  return fh != layer.shape.h || fw != layer.shape.w;
}

Status compile_window(const Graph& graph, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  std::string path = beyond_floor(graph, layer) ? "kiln kernel: ceil-mode pooling (cuDNN has no ceil mode)"
                                                 : fmt::format("kiln kernel: pooling ({})", op_name(layer.op));
  return compile_output_only(std::move(path), layer, target, out, failed);
}

Status compile_global(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only(fmt::format("kiln kernel: {}", op_name(layer.op)), layer, target, out, failed);
}

void window_forward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  pool_forward(ctx.dtype, layer.op == OpKind::maxpool, run.x[0], ctx.input(layer, 0), run.y, ctx.dims(layer.shape),
               pool_geometry(layer.attrs), ctx.stream);
}

void window_backward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  if (void* dx = first_dx(run))
    pool_backward(ctx.dtype, layer.op == OpKind::maxpool, run.x[0], ctx.input(layer, 0), run.dy, ctx.dims(layer.shape), dx,
                  first_accumulates(run), pool_geometry(layer.attrs), ctx.stream);
}

void global_forward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  global_pool_forward(ctx.dtype, layer.op == OpKind::global_maxpool, run.x[0], ctx.input(layer, 0), run.y, ctx.stream);
}

void global_backward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  if (void* dx = first_dx(run))
    global_pool_backward(ctx.dtype, layer.op == OpKind::global_maxpool, run.x[0], ctx.input(layer, 0), run.dy, dx, first_accumulates(run),
                         ctx.stream);
}

constexpr CudaOp window(OpKind kind) {
  return {.kind = kind,
          .supports = supported_everywhere,
          .compile = compile_window,
          .state_floats = no_state,
          .forward = window_forward,
          .backward = window_backward};
}

constexpr CudaOp global(OpKind kind) {
  return {.kind = kind,
          .supports = supported_everywhere,
          .compile = compile_global,
          .state_floats = no_state,
          .forward = global_forward,
          .backward = global_backward};
}

}  // namespace

const CudaOp kMaxPoolOp = window(OpKind::maxpool);
const CudaOp kAvgPoolOp = window(OpKind::avgpool);
const CudaOp kGlobalAvgPoolOp = global(OpKind::global_avgpool);
const CudaOp kGlobalMaxPoolOp = global(OpKind::global_maxpool);

}  // namespace kiln::cuda
