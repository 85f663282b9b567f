// concat: joins tensors along channels (features for vectors); same height and width.
#include <fmt/format.h>

#include <algorithm>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "math/layout.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

std::optional<Shape> infer(ShapeCtx& ctx) {
  Shape out = ctx.in(0);
  for (std::size_t i = 1; i < ctx.layer.inputs.size(); ++i) {
    const Shape& s = ctx.in(i);
    if (s.rank != out.rank || s.h != out.h || s.w != out.w) {
      ctx.error(fmt::format("cannot concatenate '{}' ({}) and '{}' ({}): {}", ctx.input(0).name, ctx.in(0).str(),
                            ctx.input(i).name, s.str(),
                            s.rank != out.rank ? "one is a feature map, the other a vector" : "height and width differ"),
                {}, "concat joins channels; every input needs the same height and width");
      return std::nullopt;
    }
    auto c = checked_add(out.c, s.c);
    if (!c) {
      ctx.error("the total number of channels overflows 64 bits");
      return std::nullopt;
    }
    out.c = *c;
  }
  return out;
}

std::optional<std::int64_t> no_flops(const Layer&, std::span<const Layer>) { return 0; }

BackwardNeeds needs(const Layer&) { return {}; }

// ---- CPU: in NCHW (and for vectors), input k is per sample one contiguous block of its
// C_k * H * W floats, starting at channel offset_k of the output; in NHWC, one block of C_k
// floats per pixel, at offset_k of the pixel's C floats. Both are `rows` rows of `size`
// floats: the input's rows are contiguous, the output's `out_size` apart ------------------

struct Rows {
  std::int64_t rows, size, out_size;
};

Rows rows_of(const CpuLayer& l, std::size_t k) {
  const math::Dims4 in = l.in_dims(k);
  if (in.nhwc) return {l.n * in.h * in.w, in.c, l.out_shape().c};
  return {l.n, in.c * in.h * in.w, l.out_shape().elements()};
}

void forward(const CpuLayer& l) {
  std::int64_t offset = 0;
  for (std::size_t k = 0; k < l.x.size(); ++k) {
    const Rows r = rows_of(l, k);
    const float* x = l.x[k];
    float* y = l.y + offset;
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < r.rows; ++i) std::copy(x + i * r.size, x + (i + 1) * r.size, y + i * r.out_size);
    offset += r.size;
  }
}

void backward(const CpuLayer& l) {
  std::int64_t offset = 0;
  for (std::size_t k = 0; k < l.dx.size(); ++k) {
    const Rows r = rows_of(l, k);
    const float* dy = l.dy + offset;
    float* dx = l.dx[k];
    const bool accumulate = l.accumulate[k];
    offset += r.size;
    if (!dx) continue;
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t i = 0; i < r.rows; ++i) {
      const float* src = dy + i * r.out_size;
      float* dst = dx + i * r.size;
      if (accumulate)
        for (std::int64_t j = 0; j < r.size; ++j) dst[j] += src[j];
      else
        std::copy(src, src + r.size, dst);
    }
  }
}

}  // namespace

const OpDef& concat_op() {
  static const OpDef def{
      .kind = OpKind::concat,
      .name = "concat",
      .min_inputs = 2,
      .max_inputs = 64,
      .infer = infer,
      .flops = no_flops,
      .backward_needs = needs,
  };
  return def;
}

const CpuOp& concat_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::concat,
      .supports = cpu_runs_every_dtype,
      .forward = forward,
      .backward = backward,
  };
  return entry;
}

}  // namespace kiln::detail
