// global_avgpool, global_maxpool: PyTorch's adaptive pooling to 1x1; the output is C x 1 x 1.
#include <algorithm>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "math/layout.hpp"
#include "math/pool.hpp"
#include "math/pool_strided.hpp"

namespace kiln::detail {

namespace {

std::optional<Shape> infer(ShapeCtx& ctx) {
  if (!ctx.require_image()) return std::nullopt;
  return Shape::chw(ctx.in().c, 1, 1);
}

std::optional<std::int64_t> flops(const Layer& layer, std::span<const Layer> before) {
  return before[static_cast<std::size_t>(layer.inputs[0])].shape.elements();
}

BackwardNeeds avg_needs(const Layer&) { return {}; }
BackwardNeeds max_needs(const Layer&) { return {.input = true, .output = true}; }

// ---- CPU: one (sample, channel) plane per iteration, read in row-major order in either
// layout: in NHWC its pixels are C floats apart ------------------------------------------

// The whole plane as one pooling window.
struct Plane {
  std::int64_t count, h, w, c;
  bool nhwc;
  math::PoolSpan rows() const { return {0, h, h}; }
  math::PoolSpan cols() const { return {0, w, w}; }
  std::int64_t size() const { return h * w; }
  // Where plane p (= sample * C + channel) starts, and how far apart its pixels are.
  std::int64_t base(std::int64_t p) const { return nhwc ? p / c * size() * c + p % c : p * size(); }
  std::int64_t step() const { return nhwc ? c : 1; }
  std::int64_t max_at(const float* x) const {
    return nhwc ? math::max_offset_strided(x, w * c, c, rows(), cols()) : math::max_offset(x, w, rows(), cols());
  }
};

Plane plane(const CpuLayer& l) {
  const math::Dims4 in = l.in_dims();
  return {l.n * in.c, in.h, in.w, in.c, in.nhwc};
}

void avg_forward(const CpuLayer& l) {
  const Plane g = plane(l);
  const std::int64_t size = g.size(), step = g.step();
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t p = 0; p < g.count; ++p) {
    const float* x = l.x[0] + g.base(p);
    double sum = 0.0;
    for (std::int64_t i = 0; i < size; ++i) sum += x[i * step];
    l.y[p] = static_cast<float>(sum / static_cast<double>(size));
  }
}

void avg_backward(const CpuLayer& l) {
  float* dx_all = l.dx[0];
  if (!dx_all) return;
  const Plane g = plane(l);
  const std::int64_t size = g.size(), step = g.step();
  const bool accumulate = l.accumulate[0];
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t p = 0; p < g.count; ++p) {
    const float share = l.dy[p] / static_cast<float>(size);
    float* dx = dx_all + g.base(p);
    if (accumulate)
      for (std::int64_t i = 0; i < size; ++i) dx[i * step] += share;
    else
      for (std::int64_t i = 0; i < size; ++i) dx[i * step] = share;
  }
}

void max_forward(const CpuLayer& l) {
  const Plane g = plane(l);
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t p = 0; p < g.count; ++p) {
    const float* x = l.x[0] + g.base(p);
    l.y[p] = x[g.max_at(x)];
  }
}

// The gradient goes to the plane's first maximum, found again in x as forward found it.
void max_backward(const CpuLayer& l) {
  float* dx_all = l.dx[0];
  if (!dx_all) return;
  const Plane g = plane(l);
  const std::int64_t size = g.size(), step = g.step();
  const bool accumulate = l.accumulate[0];
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t p = 0; p < g.count; ++p) {
    const float* x = l.x[0] + g.base(p);
    float* dx = dx_all + g.base(p);
    if (!accumulate)
      for (std::int64_t i = 0; i < size; ++i) dx[i * step] = 0.0f;
    dx[g.max_at(x)] += l.dy[p];
  }
}

}  // namespace

const OpDef& global_avgpool_op() {
  static const OpDef def{
      .kind = OpKind::global_avgpool,
      .name = "global_avgpool",
      .infer = infer,
      .flops = flops,
      .backward_needs = avg_needs,
  };
  return def;
}

const CpuOp& global_avgpool_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::global_avgpool,
      .supports = cpu_runs_every_dtype,
      .forward = avg_forward,
      .backward = avg_backward,
  };
  return entry;
}

const OpDef& global_maxpool_op() {
  static const OpDef def{
      .kind = OpKind::global_maxpool,
      .name = "global_maxpool",
      .infer = infer,
      .flops = flops,
      .backward_needs = max_needs,
  };
  return def;
}

const CpuOp& global_maxpool_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::global_maxpool,
      .supports = cpu_runs_every_dtype,
      .forward = max_forward,
      .backward = max_backward,
  };
  return entry;
}

}  // namespace kiln::detail
