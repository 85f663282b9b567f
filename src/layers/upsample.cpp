// upsample: nearest-neighbour upsampling by an integer factor, PyTorch's
// nn.Upsample(scale_factor=s, mode='nearest'): output (h, w) copies input (h / sh, w / sw).
#include <fmt/format.h>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {{.name = "scale", .type = KeyType::int_pair, .field = &Attrs::scale, .required = true}};
static_assert(key_fields_fit(kKeys));

std::optional<Shape> infer(ShapeCtx& ctx) {
  const Hw scale = ctx.layer.attrs.scale;
  if (!ctx.require_image()) return std::nullopt;
  if (scale.h < 1 || scale.w < 1) {
    ctx.error(fmt::format("scale must be a whole factor of at least 1, got {}",
                          scale.h == scale.w ? fmt::format("{}", scale.h) : fmt::format("[{}, {}]", scale.h, scale.w)),
              {}, "nearest upsampling repeats each pixel scale times; to shrink a feature map, use a pool or a strided conv");
    return std::nullopt;
  }
  const Shape& in = ctx.in();
  const auto h = checked_mul(in.h, scale.h), w = checked_mul(in.w, scale.w);
  if (!h || !w || !checked_product({in.c, *h, *w})) {
    ctx.error(fmt::format("{} upsampled by {}x{} has more elements than a 64-bit count holds", in.str(), scale.h, scale.w));
    return std::nullopt;
  }
  return Shape::chw(in.c, *h, *w);
}

std::string describe(const Layer& layer) {
  const Hw scale = layer.attrs.scale;
  return scale.h == scale.w ? fmt::format("upsample x{}", scale.h) : fmt::format("upsample x{}x{}", scale.h, scale.w);
}

// Copies only: no arithmetic.
std::optional<std::int64_t> flops(const Layer&, std::span<const Layer>) { return 0; }

BackwardNeeds needs(const Layer&) { return {}; }

// ---- CPU: y gathers its source pixel; dx gathers the scale.h x scale.w outputs it fed ------

void forward(const CpuLayer& l) {
  const math::Dims4 in = l.in_dims(), out = l.out_dims();
  const Hw scale = l.layer->attrs.scale;
  const float* x = l.x[0];
  float* y = l.y;
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t i = 0; i < out.count(); ++i) {
    const math::Index4 o = math::index_of(out, i);
    y[i] = x[in.at(o.n, o.c, o.h / scale.h, o.w / scale.w)];
  }
}

void backward(const CpuLayer& l) {
  float* dx = l.dx[0];
  if (!dx) return;
  const bool accumulate = l.accumulate[0];
  const math::Dims4 in = l.in_dims(), out = l.out_dims();
  const Hw scale = l.layer->attrs.scale;
  const float* dy = l.dy;
#pragma omp parallel for num_threads(l.threads) schedule(static)
  for (std::int64_t i = 0; i < in.count(); ++i) {
    const math::Index4 p = math::index_of(in, i);
    float sum = 0.0f;
    for (std::int64_t r = 0; r < scale.h; ++r)
      for (std::int64_t s = 0; s < scale.w; ++s) sum += dy[out.at(p.n, p.c, p.h * scale.h + r, p.w * scale.w + s)];
    dx[i] = accumulate ? dx[i] + sum : sum;
  }
}

}  // namespace

const OpDef& upsample_op() {
  static const OpDef def{
      .kind = OpKind::upsample,
      .name = "upsample",
      .keys = kKeys,
      .infer = infer,
      .flops = flops,
      .backward_needs = needs,
      .describe = describe,
  };
  return def;
}

const CpuOp& upsample_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::upsample,
      .supports = cpu_runs_every_dtype,
      .forward = forward,
      .backward = backward,
  };
  return entry;
}

}  // namespace kiln::detail

namespace kiln::layers {

LayerDef upsample(std::int64_t scale) { return upsample(Hw{scale, scale}); }

LayerDef upsample(Hw scale) {
  LayerDef def;
  def.op = OpKind::upsample;
  def.attrs.scale = scale;
  return def;
}

}  // namespace kiln::layers
