// batchnorm: PyTorch's BatchNorm2d on C x H x W (BatchNorm1d on a vector of features).
#include <fmt/format.h>

#include "graph/op_def.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {
    {"eps", KeyType::number}, {"momentum", KeyType::number}, {"weight", KeyType::boolean},
    {"bias", KeyType::boolean}, {"features", KeyType::integer},
};

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

}  // namespace

const OpDef& batchnorm_op() {
  static const OpDef def{OpKind::batchnorm, "batchnorm", kKeys, 1, 1, true, infer, params, flops, needs};
  return def;
}

}  // namespace kiln::detail
