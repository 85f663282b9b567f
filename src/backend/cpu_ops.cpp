// The CPU op table: one entry per OpKind, from each op's file (src/layers/), checked once,
// at first use, so that an entry in the wrong slot or missing a kernel stops kiln at start-up
// with the slot named instead of running another op's kernel.
#include "backend/cpu_ops.hpp"

#include "math/half.hpp"

#include <array>
#include <fmt/format.h>
#include <stdexcept>

namespace kiln::detail {

namespace {

using CpuOpGetter = const CpuOp& (*)();

// In OpKind order.
constexpr auto kCpuOpGetters = std::to_array<CpuOpGetter>({
#define KILN_OP(op, Camel) op##_cpu_op,
#include "graph/ops.def"
});
static_assert(kCpuOpGetters.size() == kOpCount, "one CPU entry per OpKind, in OpKind order");

}  // namespace

void check_cpu_op_table(std::span<const CpuOp> table) {
  if (table.size() != kOpCount)
    throw std::logic_error(fmt::format("CPU op table: {} entries for {} OpKinds", table.size(), kOpCount));
  for (std::size_t slot = 0; slot < table.size(); ++slot) {
    const CpuOp& entry = table[slot];
    const auto kind = static_cast<std::size_t>(entry.kind);
    // The graph table is checked by now, so its name for the slot is the op expected there.
    const std::string_view expected = op_table()[slot].name;
    auto bad = [&](std::string_view problem) {
      throw std::logic_error(fmt::format("CPU op table: slot {} ('{}') {}", slot, expected, problem));
    };
    if (kind != slot)
      bad(fmt::format("holds the entry of OpKind {}{}; each entry must sit at the index of its OpKind", kind,
                      kind < kOpCount ? fmt::format(" ('{}')", op_table()[kind].name) : ""));
    if (!entry.supports) bad("has no supports function");
    // The model input takes no inputs and runs no kernel: the executor stages it.
    if (op_table()[slot].max_inputs == 0) continue;
    if (!entry.forward) bad("has no forward kernel");
    if (!entry.backward) bad("has no backward kernel");
  }
}

std::span<const CpuOp> cpu_op_table() {
  static const std::array<CpuOp, kOpCount> table = [] {
    std::array<CpuOp, kOpCount> entries{};
    for (std::size_t slot = 0; slot < kOpCount; ++slot) entries[slot] = kCpuOpGetters[slot]();
    check_cpu_op_table(entries);
    return entries;
  }();
  return table;
}

const CpuOp& cpu_op(OpKind kind) {
  const auto slot = static_cast<std::size_t>(kind);
  const std::span<const CpuOp> table = cpu_op_table();
  if (slot >= table.size()) throw std::out_of_range(fmt::format("cpu_op: no op with OpKind {}", slot));
  return table[slot];
}

std::optional<std::string> cpu_runs_every_dtype(const Layer&, DType dtype, Layout) {
  if (dtype != DType::f32 && dtype != DType::bf16 && dtype != DType::f16)
    return fmt::format("the CPU backend runs fp32, bf16 and fp16, got dtype {}", static_cast<int>(dtype));
  return std::nullopt;
}

bool params_in_dtype(const Layer& layer) { return layer.op == OpKind::conv || layer.op == OpKind::linear; }

void round_to_dtype(DType dtype, float* p, std::int64_t n, int threads) {
  if (dtype == DType::f32 || n <= 0) return;
#pragma omp parallel for num_threads(threads) schedule(static) if (n > 16384)
  for (std::int64_t i = 0; i < n; ++i) p[i] = math::round_to(dtype, p[i]);
}

void run_forward(const CpuLayer& l) {
  cpu_op(l.layer->op).forward(l);
  round_to_dtype(l.dtype, l.y, l.n * l.out_shape().elements(), l.threads);
}

void run_backward(const CpuLayer& l) {
  cpu_op(l.layer->op).backward(l);
  if (l.dtype == DType::f32) return;
  for (std::size_t i = 0; i < l.dx.size(); ++i)
    if (l.dx[i]) round_to_dtype(l.dtype, l.dx[i], l.n * l.in_shape(i).elements(), l.threads);
  if (!params_in_dtype(*l.layer)) return;
  for (std::size_t k = 0; k < l.grads.size() && k < l.param_elements.size(); ++k)
    if (l.grads[k]) round_to_dtype(l.dtype, l.grads[k], l.param_elements[k], l.threads);
}

void require_cpu_support(const Graph& graph, DType dtype, Layout layout) {
  std::vector<Diagnostic> refused;
  for (const Layer& layer : graph.layers().subspan(1)) {  // the model input is staged, not run
    auto reason = cpu_op(layer.op).supports(layer, dtype, layout);
    if (!reason) continue;
    Diagnostic d;
    d.loc = layer.loc;
    d.layer = layer.name;
    d.context = describe_layer(layer, false);
    d.message = fmt::format("the CPU backend cannot run this layer: {}", *reason);
    d.hint = "train it with --device cuda, or change the layer";
    refused.push_back(std::move(d));
  }
  if (!refused.empty()) throw GraphError(std::move(refused));
}

}  // namespace kiln::detail
