// mul: the element-wise product of two inputs. The second is the first's shape, or one value
// per channel, C x 1 x 1 or a vector of C features (a squeeze-and-excitation gate: global
// pool, linear, sigmoid), applied over height and width as PyTorch's broadcasting does.
#include <fmt/format.h>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"

namespace kiln::detail {

namespace {

// One value per channel of `x`: a vector of x.c features, or x.c x 1 x 1.
bool is_channel_gate(const Shape& gate, const Shape& x) {
  return x.is_image() && gate.c == x.c && gate.h == 1 && gate.w == 1 && gate != x;
}

std::optional<Shape> infer(ShapeCtx& ctx) {
  const Shape& x = ctx.in(0);
  const Shape& gate = ctx.in(1);
  if (gate == x || is_channel_gate(gate, x)) return x;
  std::string hint = fmt::format("the second input must be {} or one value per channel ({}x1x1 or {} features)",
                                 x.str(), x.c, x.c);
  if (is_channel_gate(x, gate))
    hint = fmt::format("the per-channel gate goes second: from: [{}, {}]", ctx.input(1).name, ctx.input(0).name);
  else if (gate.h == 1 && gate.w == 1 && x.is_image())
    hint = fmt::format("a gate over '{}' needs {} values, one per channel; make it with linear, out: {}",
                       ctx.input(0).name, x.c, x.c);
  ctx.error(fmt::format("cannot multiply '{}' ({}) by '{}' ({}): the shapes differ and the second is not one value "
                        "per channel of the first",
                        ctx.input(0).name, x.str(), ctx.input(1).name, gate.str()),
            {}, hint);
  return std::nullopt;
}

BackwardNeeds needs(const Layer&) { return {.input = true, .output = false}; }

// ---- CPU: y = a * b; da = dy * b; db = dy * a, summed over h and w for a per-channel b -----
//
// A per-channel b holds value (n, c) at n * C + c in either layout.

bool broadcasts(const CpuLayer& l) { return l.in_shape(1) != l.in_shape(0); }

void forward(const CpuLayer& l) {
  const math::Dims4 d = l.out_dims();
  const float* a = l.x[0];
  const float* b = l.x[1];
  float* y = l.y;
  const std::int64_t count = d.count();
  if (!broadcasts(l)) {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i) y[i] = a[i] * b[i];
    return;
  }
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t i = 0; i < count; ++i) y[i] = a[i] * b[math::per_channel_index(d, i)];
}

void backward(const CpuLayer& l) {
  const math::Dims4 d = l.out_dims();
  const float* a = l.x[0];
  const float* b = l.x[1];
  const float* dy = l.dy;
  const std::int64_t count = d.count();
  const bool broadcast = broadcasts(l);
  if (float* da = l.dx[0]) {
    const bool accumulate = l.accumulate[0];
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i) {
      const float v = dy[i] * (broadcast ? b[math::per_channel_index(d, i)] : b[i]);
      da[i] = accumulate ? da[i] + v : v;
    }
  }
  float* db = l.dx[1];
  if (!db) return;
  const bool accumulate = l.accumulate[1];
  if (!broadcast) {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < count; ++i) {
      const float v = dy[i] * a[i];
      db[i] = accumulate ? db[i] + v : v;
    }
    return;
  }
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t nc = 0; nc < d.n * d.c; ++nc) {
    const std::int64_t n = nc / d.c, c = nc % d.c;
    double sum = 0.0;
    for (std::int64_t h = 0; h < d.h; ++h)
      for (std::int64_t w = 0; w < d.w; ++w) {
        const std::int64_t o = d.at(n, c, h, w);
        sum += static_cast<double>(dy[o]) * a[o];
      }
    db[nc] = accumulate ? db[nc] + static_cast<float>(sum) : static_cast<float>(sum);
  }
}

}  // namespace

const OpDef& mul_op() {
  static const OpDef def{
      .kind = OpKind::mul,
      .name = "mul",
      .min_inputs = 2,
      .max_inputs = 2,
      .infer = infer,
      .flops = elementwise_flops,
      .backward_needs = needs,
  };
  return def;
}

const CpuOp& mul_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::mul,
      .supports = cpu_runs_every_dtype,
      .forward = forward,
      .backward = backward,
  };
  return entry;
}

}  // namespace kiln::detail

namespace kiln::layers {

LayerDef mul(std::vector<std::string> inputs) {
  LayerDef def;
  def.op = OpKind::mul;
  return def.from(std::move(inputs));
}

}  // namespace kiln::layers
