// flatten: C x H x W -> C*H*W features, channel-major like PyTorch; a view of its input.
#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"

namespace kiln::detail {

namespace {

std::optional<Shape> infer(ShapeCtx& ctx) { return Shape::vec(ctx.in().elements()); }

std::optional<std::int64_t> no_flops(const Layer&, std::span<const Layer>) { return 0; }

BackwardNeeds needs(const Layer&) { return {}; }

// ---- CPU: NCHW is already channel-major, so the executor passes the same memory in and out
// and these do nothing; they copy only when given separate buffers -------------------------

void forward(const CpuLayer& l) {
  if (l.y == l.x[0]) return;
  const std::int64_t count = l.n * l.out_shape().elements();
  const float* x = l.x[0];
  float* y = l.y;
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t i = 0; i < count; ++i) y[i] = x[i];
}

void backward(const CpuLayer& l) {
  float* dx = l.dx[0];
  if (!dx || dx == l.dy) return;
  const std::int64_t count = l.n * l.out_shape().elements();
  const float* dy = l.dy;
  if (l.accumulate[0]) {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i) dx[i] += dy[i];
  } else {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i) dx[i] = dy[i];
  }
}

}  // namespace

const OpDef& flatten_op() {
  static const OpDef def{
      .kind = OpKind::flatten,
      .name = "flatten",
      .infer = infer,
      .flops = no_flops,
      .backward_needs = needs,
  };
  return def;
}

const CpuOp& flatten_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::flatten,
      .supports = cpu_runs_fp32_nchw,
      .forward = forward,
      .backward = backward,
  };
  return entry;
}

}  // namespace kiln::detail
