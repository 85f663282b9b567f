// dropout: inverted dropout; the mask is a counter-based hash of (seed, step, element), so
// backward regenerates it instead of storing it.
#include <fmt/format.h>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "math/dropout.hpp"
#include "math/layout.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {{.name = "p", .type = KeyType::number, .field = &Attrs::p}};
static_assert(key_fields_fit(kKeys));

std::optional<Shape> infer(ShapeCtx& ctx) {
  double p = ctx.layer.attrs.p;
  if (!(p >= 0 && p < 1)) {
    ctx.error(fmt::format("p must be in [0, 1), got {}", p), {}, "p is the probability of zeroing an element");
    return std::nullopt;
  }
  return ctx.in();
}

BackwardNeeds needs(const Layer&) { return {}; }

// ---- CPU: the multiplier of an element is drawn from the layer's key for the step and the
// element's logical index in the batch (its NCHW offset, in either layout: math::logical_index),
// as on CUDA; evaluation, and p = 0, are the identity ----------------------------------------

struct Mask {
  std::uint64_t key;
  float p, scale;
};

Mask mask(const CpuLayer& l) {
  const double p = l.layer->attrs.p;
  // From the float p, as the CUDA launcher computes it, so both backends scale kept
  // elements identically.
  const float pf = static_cast<float>(p);
  return {l.dropout_key, pf, static_cast<float>(1.0 / (1.0 - static_cast<double>(pf)))};
}

// out = in * multiplier (or in, when `identity`), added into out when `accumulate`.
void apply(const CpuLayer& l, const float* in, float* out, bool accumulate) {
  const std::int64_t count = l.n * l.out_shape().elements();
  const math::Dims4 d = l.out_dims();
  const bool identity = !l.train || l.layer->attrs.p == 0.0;
  const Mask m = mask(l);
  if (identity && !accumulate) {
    if (out == in) return;
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i) out[i] = in[i];
  } else if (identity) {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i) out[i] += in[i];
  } else if (!accumulate) {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i)
      out[i] = in[i] * math::dropout_multiplier(m.key, static_cast<std::uint64_t>(math::logical_index(d, i)), m.p, m.scale);
  } else {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i)
      out[i] += in[i] * math::dropout_multiplier(m.key, static_cast<std::uint64_t>(math::logical_index(d, i)), m.p, m.scale);
  }
}

void forward(const CpuLayer& l) { apply(l, l.x[0], l.y, false); }

void backward(const CpuLayer& l) {
  if (l.dx[0]) apply(l, l.dy, l.dx[0], l.accumulate[0]);
}

}  // namespace

const OpDef& dropout_op() {
  static const OpDef def{
      .kind = OpKind::dropout,
      .name = "dropout",
      .keys = kKeys,
      .infer = infer,
      .flops = elementwise_flops,
      .backward_needs = needs,
  };
  return def;
}

const CpuOp& dropout_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::dropout,
      .supports = cpu_runs_every_dtype,
      .forward = forward,
      .backward = backward,
  };
  return entry;
}

}  // namespace kiln::detail
