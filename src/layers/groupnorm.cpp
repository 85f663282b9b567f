// groupnorm: PyTorch's GroupNorm (affine) on C x H x W, or on a vector of C features.
#include <fmt/format.h>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "math/groupnorm.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {
    {.name = "groups", .type = KeyType::integer, .field = &Attrs::groups, .required = true},
    {.name = "eps", .type = KeyType::number, .field = &Attrs::eps},
};
static_assert(key_fields_fit(kKeys));

// "1, 2, 4, 8, 16 or 32"
std::string divisors_text(std::int64_t c) {
  std::string out;
  std::int64_t last = 0;
  for (std::int64_t d = 1; d <= c; ++d) {
    if (c % d != 0) continue;
    if (last) out += out.empty() ? fmt::format("{}", last) : fmt::format(", {}", last);
    last = d;
  }
  return out.empty() ? fmt::format("{}", last) : fmt::format("{} or {}", out, last);
}

std::optional<Shape> infer(ShapeCtx& ctx) {
  const Attrs& a = ctx.layer.attrs;
  const Shape& in = ctx.in();
  const char* unit = in.is_image() ? "channels" : "features";
  bool ok = true;
  if (!(a.eps > 0)) ok = false, ctx.error(fmt::format("eps must be positive, got {}", a.eps));
  if (a.groups < 1) {
    ok = false, ctx.error(fmt::format("groups must be at least 1, got {}", a.groups), {},
                          fmt::format("use a divisor of the input's {} {}: {}", in.c, unit, divisors_text(in.c)));
  } else if (in.c % a.groups != 0) {
    ok = false,
    ctx.error(fmt::format("groups: {} does not divide the {} {} of its input '{}' ({})", a.groups, in.c, unit,
                          ctx.input().name, in.str()),
              {fmt::format("{} {} / {} groups = {} remainder {}", in.c, unit, a.groups, in.c / a.groups, in.c % a.groups)},
              fmt::format("use a divisor of {}: {}", in.c, divisors_text(in.c)));
  }
  if (!ok) return std::nullopt;
  return in;
}

void params(const Layer& layer, std::span<const Layer>, std::vector<Param>& out) {
  const std::int64_t c = layer.shape.c;
  out.push_back({layer.name + ".weight", layer.index, ParamRole::weight, {c}, 0, true});
  out.push_back({layer.name + ".bias", layer.index, ParamRole::bias, {c}, 0, true});
}

// PyTorch's: weight 1, bias 0.
float initial_value(ParamRole role) { return role == ParamRole::weight ? 1.0f : 0.0f; }

std::string describe(const Layer& layer) { return fmt::format("groupnorm, {} groups", layer.attrs.groups); }

std::optional<std::int64_t> flops(const Layer& layer, std::span<const Layer>) {
  return checked_mul(layer.shape.elements(), 2);
}

BackwardNeeds needs(const Layer&) { return {.input = true, .output = false}; }

// ---- CPU: one (sample, group) per iteration, its values in a fixed order, sums in double --
//
// state: the mean [0, n*G) and inverse standard deviation [n*G, 2*n*G) of each (sample,
// group), in (n, g) order. GroupNorm has no running statistics: evaluation normalizes the
// same way, so backward after either forward is the same.

std::int64_t state_floats(const Layer& layer, std::int64_t batch) { return 2 * batch * layer.attrs.groups; }

enum ParamIndex : std::size_t { kWeight, kBias };

math::Groups groups_of(const CpuLayer& l) { return {l.out_dims(), l.layer->attrs.groups}; }

void forward(const CpuLayer& l) {
  const math::Groups g = groups_of(l);
  const double eps = l.layer->attrs.eps;
  const float* x = l.x[0];
  const float* weight = l.params[kWeight];
  const float* bias = l.params[kBias];
  float* y = l.y;
  float* mean_out = l.state;
  float* invstd_out = l.state + g.count();
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t ng = 0; ng < g.count(); ++ng) {
    const std::int64_t n = ng / g.groups, group = ng % g.groups;
    double sum = 0.0;
    for (std::int64_t j = 0; j < g.size(); ++j) sum += x[g.at(n, group, j)];
    const double mean = sum / static_cast<double>(g.size());
    double squares = 0.0;
    for (std::int64_t j = 0; j < g.size(); ++j) {
      const double d = x[g.at(n, group, j)] - mean;
      squares += d * d;
    }
    const double invstd = math::gn_invstd(squares / static_cast<double>(g.size()), eps);
    mean_out[ng] = static_cast<float>(mean);
    invstd_out[ng] = static_cast<float>(invstd);
    for (std::int64_t j = 0; j < g.size(); ++j) {
      const std::int64_t o = g.at(n, group, j), c = g.channel(group, j);
      y[o] = math::gn_forward(x[o], mean, invstd, weight[c], bias[c]);
    }
  }
}

void backward(const CpuLayer& l) {
  const math::Groups g = groups_of(l);
  const math::Dims4 d = g.dims;
  const float* x = l.x[0];
  const float* dy = l.dy;
  const float* weight = l.params[kWeight];
  const float* mean = l.state;
  const float* invstd = l.state + g.count();
  // Parameter gradients: per channel, over samples and positions.
  float* dweight = l.grads[kWeight];
  float* dbias = l.grads[kBias];
  if (dweight || dbias) {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t c = 0; c < d.c; ++c) {
      const std::int64_t group = c / g.channels();
      double sum_dy = 0.0, sum_dy_xhat = 0.0;
      for (std::int64_t n = 0; n < d.n; ++n) {
        const double m = mean[n * g.groups + group], s = invstd[n * g.groups + group];
        for (std::int64_t h = 0; h < d.h; ++h)
          for (std::int64_t w = 0; w < d.w; ++w) {
            const std::int64_t o = d.at(n, c, h, w);
            sum_dy += dy[o];
            sum_dy_xhat += static_cast<double>(dy[o]) * (x[o] - m) * s;
          }
      }
      if (dweight) dweight[c] = static_cast<float>(sum_dy_xhat);
      if (dbias) dbias[c] = static_cast<float>(sum_dy);
    }
  }
  float* dx = l.dx[0];
  if (!dx) return;
  const bool accumulate = l.accumulate[0];
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t ng = 0; ng < g.count(); ++ng) {
    const std::int64_t n = ng / g.groups, group = ng % g.groups;
    const double m = mean[ng], s = invstd[ng];
    double sum_dyw = 0.0, sum_dyw_xhat = 0.0;
    for (std::int64_t j = 0; j < g.size(); ++j) {
      const std::int64_t o = g.at(n, group, j);
      const double dyw = static_cast<double>(dy[o]) * weight[g.channel(group, j)];
      sum_dyw += dyw;
      sum_dyw_xhat += dyw * (x[o] - m) * s;
    }
    const math::GnBackward b = math::gn_backward(m, s, sum_dyw, sum_dyw_xhat, g.size());
    for (std::int64_t j = 0; j < g.size(); ++j) {
      const std::int64_t o = g.at(n, group, j);
      const float v = math::gn_grad_input(x[o], dy[o], weight[g.channel(group, j)], b);
      dx[o] = accumulate ? dx[o] + v : v;
    }
  }
}

}  // namespace

const OpDef& groupnorm_op() {
  static const OpDef def{
      .kind = OpKind::groupnorm,
      .name = "groupnorm",
      .keys = kKeys,
      .has_params = true,
      .infer = infer,
      .params = params,
      .flops = flops,
      .backward_needs = needs,
      .initial_value = initial_value,
      .describe = describe,
  };
  return def;
}

const CpuOp& groupnorm_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::groupnorm,
      .supports = cpu_runs_every_dtype,
      .forward = forward,
      .backward = backward,
      .state_floats = state_floats,
  };
  return entry;
}

}  // namespace kiln::detail

namespace kiln::layers {

LayerDef groupnorm(std::int64_t groups) {
  LayerDef def;
  def.op = OpKind::groupnorm;
  return def.groups(groups);
}

}  // namespace kiln::layers
