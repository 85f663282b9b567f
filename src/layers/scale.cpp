// scale: multiplies by a constant `factor` (airbench's final 1/9).
#include <cmath>
#include <fmt/format.h>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {{.name = "factor", .type = KeyType::number, .field = &Attrs::factor, .required = true}};
static_assert(key_fields_fit(kKeys));

std::optional<Shape> infer(ShapeCtx& ctx) {
  if (!std::isfinite(ctx.layer.attrs.factor)) {
    ctx.error(fmt::format("factor must be finite, got {}", ctx.layer.attrs.factor));
    return std::nullopt;
  }
  return ctx.in();
}

BackwardNeeds needs(const Layer&) { return {}; }

// ---- CPU: y = factor * x, dx = factor * dy (fp32 factor, as PyTorch's x * 1/9) -------------

void forward(const CpuLayer& l) {
  const std::int64_t count = l.n * l.out_shape().elements();
  const float f = static_cast<float>(l.layer->attrs.factor);
  const float* x = l.x[0];
  float* y = l.y;
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t i = 0; i < count; ++i) y[i] = f * x[i];
}

void backward(const CpuLayer& l) {
  float* dx = l.dx[0];
  if (!dx) return;
  const std::int64_t count = l.n * l.out_shape().elements();
  const float f = static_cast<float>(l.layer->attrs.factor);
  const float* dy = l.dy;
  if (l.accumulate[0]) {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i) dx[i] += f * dy[i];
  } else {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i) dx[i] = f * dy[i];
  }
}

}  // namespace

const OpDef& scale_op() {
  static const OpDef def{
      .kind = OpKind::scale,
      .name = "scale",
      .keys = kKeys,
      .infer = infer,
      .flops = elementwise_flops,
      .backward_needs = needs,
  };
  return def;
}

const CpuOp& scale_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::scale,
      .supports = cpu_runs_every_dtype,
      .forward = forward,
      .backward = backward,
  };
  return entry;
}

}  // namespace kiln::detail
