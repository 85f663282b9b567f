// flatten: C x H x W -> C*H*W features, channel-major like PyTorch; a view of its input.
#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "math/layout.hpp"

namespace kiln::detail {

namespace {

std::optional<Shape> infer(ShapeCtx& ctx) { return Shape::vec(ctx.in().elements()); }

std::optional<std::int64_t> no_flops(const Layer&, std::span<const Layer>) { return 0; }

BackwardNeeds needs(const Layer&) { return {}; }

// Where in `in`'s memory the element at channel-major (NCHW) offset i lies.
std::int64_t physical(const math::Dims4& in, std::int64_t i) {
  const std::int64_t w = i % in.w, h = i / in.w % in.h, c = i / (in.w * in.h) % in.c, n = i / (in.w * in.h * in.c);
  return in.at(n, c, h, w);
}

// ---- CPU: NCHW is already channel-major, so the memory planner gives the output its input's
// memory and these do nothing (flatten_is_view); from NHWC, forward gathers each element
// from its place in the image and backward scatters it back ------------------------------

void forward(const CpuLayer& l) {
  if (l.y == l.x[0]) return;
  const math::Dims4 in = l.in_dims();
  const std::int64_t count = in.count();
  const float* x = l.x[0];
  float* y = l.y;
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t i = 0; i < count; ++i) y[i] = x[in.nhwc ? physical(in, i) : i];
}

void backward(const CpuLayer& l) {
  float* dx = l.dx[0];
  if (!dx || dx == l.dy) return;
  const math::Dims4 in = l.in_dims();
  const std::int64_t count = in.count();
  const float* dy = l.dy;
  const bool accumulate = l.accumulate[0];
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t i = 0; i < count; ++i) {
    float& d = dx[in.nhwc ? physical(in, i) : i];
    d = accumulate ? d + dy[i] : dy[i];
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
      .supports = cpu_runs_every_dtype,
      .forward = forward,
      .backward = backward,
  };
  return entry;
}

}  // namespace kiln::detail
