// add: element-wise sum of two or more tensors of identical shape (residual connections).
#include <fmt/format.h>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

std::string shortcut_hint(const Shape& a, const Shape& b) {
  if (a.is_image() && b.is_image() && a.h != b.h && b.h > 0 && a.h % b.h == 0)
    return fmt::format("add needs identical shapes; to match {} to {}, project it with a 1x1 conv, out: {}, stride: {}",
                       a.str(), b.str(), b.c, a.h / b.h);
  if (a.is_image() && b.is_image() && a.h == b.h && a.w == b.w)
    return fmt::format("add needs identical shapes; project one side with a 1x1 conv to {} channels", b.c);
  return "add needs identical shapes";
}

std::optional<Shape> infer(ShapeCtx& ctx) {
  const Shape& first = ctx.in(0);
  for (std::size_t i = 1; i < ctx.layer.inputs.size(); ++i) {
    const Shape& s = ctx.in(i);
    if (s == first) continue;
    ctx.error(fmt::format("cannot add '{}' ({}) and '{}' ({}): shapes differ", ctx.input(0).name, first.str(),
                          ctx.input(i).name, s.str()),
              {}, shortcut_hint(s, first));
    return std::nullopt;
  }
  return first;
}

std::optional<std::int64_t> flops(const Layer& layer, std::span<const Layer>) {
  return checked_mul(layer.shape.elements(), static_cast<std::int64_t>(layer.inputs.size()) - 1);
}

BackwardNeeds needs(const Layer&) { return {}; }

// ---- CPU: y = x0 + x1 + ... summed left to right; every input's gradient is dy -------------

void forward(const CpuLayer& l) {
  const std::int64_t count = l.n * l.out_shape().elements();
  const std::size_t inputs = l.x.size();
  const float* const* x = l.x.data();
  float* y = l.y;
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t i = 0; i < count; ++i) {
    float sum = x[0][i];
    for (std::size_t k = 1; k < inputs; ++k) sum += x[k][i];
    y[i] = sum;
  }
}

void backward(const CpuLayer& l) {
  const std::int64_t count = l.n * l.out_shape().elements();
  const float* dy = l.dy;
  for (std::size_t k = 0; k < l.dx.size(); ++k) {
    float* dx = l.dx[k];
    if (!dx) continue;
    if (l.accumulate[k]) {
#pragma omp parallel for num_threads(l.threads) schedule(static)
      for (std::int64_t i = 0; i < count; ++i) dx[i] += dy[i];
    } else if (dx != dy) {
#pragma omp parallel for num_threads(l.threads) schedule(static)
      for (std::int64_t i = 0; i < count; ++i) dx[i] = dy[i];
    }
  }
}

}  // namespace

const OpDef& add_op() {
  static const OpDef def{
      .kind = OpKind::add,
      .name = "add",
      .min_inputs = 2,
      .max_inputs = 64,
      .infer = infer,
      .flops = flops,
      .backward_needs = needs,
  };
  return def;
}

const CpuOp& add_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::add,
      .supports = cpu_runs_every_dtype,
      .forward = forward,
      .backward = backward,
  };
  return entry;
}

}  // namespace kiln::detail
