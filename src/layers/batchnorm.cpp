// batchnorm: PyTorch's BatchNorm2d on C x H x W (BatchNorm1d on a vector of features).
#include <fmt/format.h>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "math/batchnorm.hpp"
#include "math/layout.hpp"
#include "math/reduce.hpp"
#include "math/simd.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {
    {.name = "eps", .type = KeyType::number, .field = &Attrs::eps},
    {.name = "momentum", .type = KeyType::number, .field = &Attrs::momentum},
    {.name = "weight", .type = KeyType::boolean, .field = &Attrs::weight},
    {.name = "bias", .type = KeyType::boolean, .field = &Attrs::bias},
    {.name = "features", .type = KeyType::integer, .field = &Attrs::in},
};
static_assert(key_fields_fit(kKeys));

std::optional<Shape> infer(ShapeCtx& ctx) {
  const Attrs& a = ctx.layer.attrs;
  const Shape& in = ctx.in();
  bool ok = true;
  if (!(a.eps > 0)) ok = false, ctx.error(fmt::format("eps must be positive, got {}", a.eps));
  if (!(a.momentum >= 0 && a.momentum <= 1))
    ok = false, ctx.error(fmt::format("momentum must be in [0, 1] (PyTorch's meaning), got {}", a.momentum));
  if (a.in && *a.in != in.c) {
    const char* unit = in.is_image() ? "channels" : "features";
    ok = false, ctx.error(fmt::format("declares features: {}, but its input '{}' has {} {} ({})", *a.in, ctx.input().name,
                                      in.c, unit, in.str()),
                          {}, fmt::format("set features: {}, or remove 'features' to infer it", in.c));
  }
  if (!ok) return std::nullopt;
  return in;
}

void params(const Layer& layer, std::span<const Layer>, std::vector<Param>& out) {
  std::int64_t c = layer.shape.c;
  const Attrs& a = layer.attrs;
  out.push_back({layer.name + ".weight", layer.index, ParamRole::weight, {c}, 0, a.weight});
  out.push_back({layer.name + ".bias", layer.index, ParamRole::bias, {c}, 0, a.bias});
  out.push_back({layer.name + ".running_mean", layer.index, ParamRole::running_mean, {c}, 0, false, true});
  out.push_back({layer.name + ".running_var", layer.index, ParamRole::running_var, {c}, 0, false, true});
}

std::optional<std::int64_t> flops(const Layer& layer, std::span<const Layer>) {
  return checked_mul(layer.shape.elements(), 2);
}

BackwardNeeds needs(const Layer&) { return {.input = true, .output = false}; }

// PyTorch's start: weight and running variance 1, bias and running mean 0.
float initial_value(ParamRole role) {
  return role == ParamRole::weight || role == ParamRole::running_var ? 1.0f : 0.0f;
}

// ---- CPU: one channel per iteration, its values in a fixed order, summed in 16 double lanes
// per run (math/reduce.hpp) ---------------------------------------
//
// state: the per-channel mean [0, C) and inverse standard deviation [C, 2C) that forward
// normalized with (batch statistics in training, running ones in evaluation).

std::int64_t state_floats(const Layer& layer, std::int64_t) { return 2 * layer.shape.c; }

enum ParamIndex : std::size_t { kWeight, kBias, kRunningMean, kRunningVar };

// Channel c's values: n runs (one per sample) of `size` floats (its pixels) `step` apart,
// the runs `stride` apart, from c * `first`. NCHW: a run is contiguous (step 1); NHWC: its
// pixels are C floats apart. Either way a channel's values come in the same order and are
// summed in the same lanes, so the sums, and the results, are the same in both layouts.
// A vector of features is NCHW with one pixel.
struct Channels {
  std::int64_t c, size, n, stride, first, step;
  std::int64_t count() const { return n * size; }
  std::int64_t at(std::int64_t i, std::int64_t j) const { return i * stride + j * step; }
};

Channels channels(const CpuLayer& l) {
  const math::Dims4 d = l.out_dims();
  if (d.nhwc) return {d.c, d.h * d.w, l.n, d.c * d.h * d.w, 1, d.c};
  return {d.c, d.h * d.w, l.n, d.c * d.h * d.w, d.h * d.w, 1};
}

void forward(const CpuLayer& l) {
  const Channels g = channels(l);
  const Attrs& a = l.layer->attrs;
  float* mean_out = l.state;
  float* invstd_out = l.state + g.c;
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t c = 0; c < g.c; ++c) {
    math::with_best_simd([&](auto) KILN_INLINE {
      const float* x = l.x[0] + c * g.first;
      double mean = 0.0, invstd = 0.0;
      if (l.train) {
        double sum = 0.0;
        for (std::int64_t i = 0; i < g.n; ++i) sum += math::sum_floats<double>(x + i * g.stride, g.size, g.step);
        mean = sum / static_cast<double>(g.count());
        double squares = 0.0;
        for (std::int64_t i = 0; i < g.n; ++i)
          squares += math::sum_squared_deviations(x + i * g.stride, g.size, mean, g.step);
        double var = squares / static_cast<double>(g.count());
        invstd = math::bn_invstd(var, a.eps);
        float& running_mean = l.params[kRunningMean][c];
        float& running_var = l.params[kRunningVar][c];
        running_mean = static_cast<float>(math::bn_running(running_mean, mean, a.momentum));
        running_var = static_cast<float>(math::bn_running(running_var, math::bn_unbiased(var, g.count()), a.momentum));
      } else {
        mean = l.params[kRunningMean][c];
        invstd = math::bn_invstd(l.params[kRunningVar][c], a.eps);
      }
      mean_out[c] = static_cast<float>(mean);
      invstd_out[c] = static_cast<float>(invstd);
      const math::BnAffine f = math::bn_affine(mean, invstd, l.params[kWeight][c], l.params[kBias][c]);
      float* y = l.y + c * g.first;
      for (std::int64_t i = 0; i < g.n; ++i) {
        const float* xr = x + i * g.stride;
        float* yr = y + i * g.stride;
        if (g.step == 1)  // contiguous: vectorizes
          for (std::int64_t j = 0; j < g.size; ++j) yr[j] = xr[j] * f.alpha + f.beta;
        else
          for (std::int64_t j = 0; j < g.size; ++j) yr[j * g.step] = xr[j * g.step] * f.alpha + f.beta;
      }
    });
  }
}

// Training: the standard batch-statistics gradient. Evaluation (a backward after an eval
// forward): the statistics are constants, so dx = dy * weight * invstd.
void backward(const CpuLayer& l) {
  const Channels g = channels(l);
  float* dx_all = l.dx[0];
  const bool accumulate = l.accumulate[0];
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t c = 0; c < g.c; ++c) {
    math::with_best_simd([&](auto) KILN_INLINE {
      const float* x = l.x[0] + c * g.first;
      const float* dy = l.dy + c * g.first;
      const double mean = l.state[c], invstd = l.state[g.c + c];
      double sum_dy = 0.0, sum_dy_xmu = 0.0;
      for (std::int64_t i = 0; i < g.n; ++i)
        math::sum_and_centered_dot(dy + i * g.stride, x + i * g.stride, g.size, mean, sum_dy, sum_dy_xmu, g.step);
      if (l.grads[kWeight]) l.grads[kWeight][c] = static_cast<float>(sum_dy_xmu * invstd);
      if (l.grads[kBias]) l.grads[kBias][c] = static_cast<float>(sum_dy);
      if (!dx_all) return;
      math::BnBackward b = math::bn_backward(mean, invstd, l.params[kWeight][c], sum_dy, sum_dy_xmu, g.count());
      if (!l.train) b.proj = 0.0f, b.mean_dy = 0.0f;
      float* dx = dx_all + c * g.first;
      for (std::int64_t i = 0; i < g.n; ++i) {
        const std::int64_t k0 = i * g.stride;
        if (g.step == 1 && !accumulate)  // contiguous: vectorizes
          for (std::int64_t j = 0; j < g.size; ++j) dx[k0 + j] = math::bn_grad_input(x[k0 + j], dy[k0 + j], b);
        else if (g.step == 1)
          for (std::int64_t j = 0; j < g.size; ++j) dx[k0 + j] += math::bn_grad_input(x[k0 + j], dy[k0 + j], b);
        else
          for (std::int64_t j = 0; j < g.size; ++j) {
            const std::int64_t k = k0 + j * g.step;
            const float v = math::bn_grad_input(x[k], dy[k], b);
            dx[k] = accumulate ? dx[k] + v : v;
          }
      }
    });
  }
}

}  // namespace

const OpDef& batchnorm_op() {
  static const OpDef def{
      .kind = OpKind::batchnorm,
      .name = "batchnorm",
      .keys = kKeys,
      .has_params = true,
      .infer = infer,
      .params = params,
      .flops = flops,
      .backward_needs = needs,
      .initial_value = initial_value,
  };
  return def;
}

const CpuOp& batchnorm_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::batchnorm,
      .supports = cpu_runs_every_dtype,
      .forward = forward,
      .backward = backward,
      .state_floats = state_floats,
  };
  return entry;
}

}  // namespace kiln::detail
