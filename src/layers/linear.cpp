// linear: PyTorch's Linear on a vector of features; weight [out, in].
#include <fmt/format.h>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "layers/gemm.hpp"
#include "util/checked.hpp"

namespace kiln::detail {

namespace {

constexpr KeyDef kKeys[] = {
    {.name = "out", .type = KeyType::integer, .field = &Attrs::out, .required = true},
    {.name = "bias", .type = KeyType::boolean, .field = &Attrs::bias},
    {.name = "in", .type = KeyType::integer, .field = &Attrs::in},
};
static_assert(key_fields_fit(kKeys));

std::optional<Shape> infer(ShapeCtx& ctx) {
  const Attrs& a = ctx.layer.attrs;
  const Shape& in = ctx.in();
  bool ok = true;
  if (a.out < 1) ok = false, ctx.error(fmt::format("out must be at least 1, got {}", a.out));
  if (in.is_image()) {
    ctx.error(fmt::format("expects a vector of features (2-D with the batch), but its input '{}' is {} (4-D with the batch)",
                          ctx.input().name, in.str()),
              {}, fmt::format("add {{op: flatten}} before it: {} flattens to {} features", in.str(), in.elements()));
    return std::nullopt;
  }
  if (a.in && *a.in != in.c) {
    std::vector<std::string> notes;
    const Layer& src = ctx.input();
    if (src.op == OpKind::flatten) {
      const Layer& flat_in = ctx.before[static_cast<std::size_t>(src.inputs[0])];
      notes.push_back(fmt::format("'{}' flattens '{}' ({}) to {} features", src.name, flat_in.name, flat_in.shape.str(), in.c));
    }
    notes.push_back(fmt::format("at run time this is PyTorch's \"mat1 and mat2 shapes cannot be multiplied (Bx{} and {}x{})\"",
                                in.c, *a.in, a.out));
    ok = false, ctx.error(fmt::format("declares in: {}, but its input '{}' has {} features", *a.in, src.name, in.c),
                          std::move(notes), fmt::format("set in: {}, or remove 'in' to infer it", in.c));
  }
  if (!ok) return std::nullopt;
  return Shape::vec(a.out);
}

void params(const Layer& layer, std::span<const Layer> before, std::vector<Param>& out) {
  std::int64_t in_c = before[static_cast<std::size_t>(layer.inputs[0])].shape.c;
  out.push_back({layer.name + ".weight", layer.index, ParamRole::weight, {layer.attrs.out, in_c}});
  if (layer.attrs.bias) out.push_back({layer.name + ".bias", layer.index, ParamRole::bias, {layer.attrs.out}});
}

std::optional<std::int64_t> flops(const Layer& layer, std::span<const Layer> before) {
  std::int64_t in_c = before[static_cast<std::size_t>(layer.inputs[0])].shape.c;
  return checked_product({2, in_c, layer.attrs.out});
}

BackwardNeeds needs(const Layer& layer) { return {.input = !layer.attrs.frozen, .output = false}; }

// y[n, out] = x[n, in] * W^T + b: the bias is written first and the GEMM adds to it.
void cpu_forward(const CpuLayer& l) {
  const std::int64_t n = l.n, in = l.in_shape().c, out = l.out_shape().c;
  float beta = 0.0f;
  if (l.layer->attrs.bias) {
    const float* b = l.params[1];
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t s = 0; s < n; ++s)
      for (std::int64_t o = 0; o < out; ++o) l.y[s * out + o] = b[o];
    beta = 1.0f;
  }
  gemm(Trans::no, Trans::yes, n, out, in, 1.0f, l.x[0], in, l.params[0], in, beta, l.y, out, l.threads);
}

// dx = dy * W, dW = dy^T * x, db = column sums of dy (in double, one thread per column).
void cpu_backward(const CpuLayer& l) {
  const std::int64_t n = l.n, in = l.in_shape().c, out = l.out_shape().c;
  float* dx = l.dx.empty() ? nullptr : l.dx[0];
  float* dw = l.grads.empty() ? nullptr : l.grads[0];
  float* db = l.layer->attrs.bias && l.grads.size() > 1 ? l.grads[1] : nullptr;
  if (dx) {
    const bool accumulate = !l.accumulate.empty() && l.accumulate[0];
    gemm(Trans::no, Trans::no, n, in, out, 1.0f, l.dy, out, l.params[0], in, accumulate ? 1.0f : 0.0f, dx, in,
         l.threads);
  }
  if (dw) gemm(Trans::yes, Trans::no, out, in, n, 1.0f, l.dy, out, l.x[0], in, 0.0f, dw, in, l.threads);
  if (db) {
#pragma omp parallel for num_threads(l.threads) schedule(static)
    for (std::int64_t o = 0; o < out; ++o) {
      double sum = 0.0;
      for (std::int64_t s = 0; s < n; ++s) sum += l.dy[s * out + o];
      db[o] = static_cast<float>(sum);
    }
  }
}

}  // namespace

const OpDef& linear_op() {
  static const OpDef def{
      .kind = OpKind::linear,
      .name = "linear",
      .keys = kKeys,
      .has_params = true,
      .infer = infer,
      .params = params,
      .flops = flops,
      .backward_needs = needs,
  };
  return def;
}

const CpuOp& linear_cpu_op() {
  static const CpuOp entry{
      .kind = OpKind::linear,
      .supports = cpu_runs_every_dtype,
      .forward = cpu_forward,
      .backward = cpu_backward,
  };
  return entry;
}

}  // namespace kiln::detail
