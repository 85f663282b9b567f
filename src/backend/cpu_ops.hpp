#pragma once

// The CPU backend's op table: for each op, whether the CPU runs it for a dtype and layout,
// and its kernels. Indexed by OpKind like the graph's table (graph/op_def.hpp); each op's
// entry lives in its file in src/layers/, beside its shape rule.
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "backend/cpu_layer.hpp"
#include "graph/op_def.hpp"
#include "kiln/types.hpp"

namespace kiln::detail {

struct CpuOp {
  OpKind kind;
  // nullopt when the CPU runs `layer` in `dtype` and `layout`; otherwise the reason it does not.
  std::optional<std::string> (*supports)(const Layer& layer, DType dtype, Layout layout) = nullptr;
  // Forward writes y; backward writes dx (where not nullptr, adding when accumulate says so)
  // and the parameter gradients (where not nullptr, overwriting them). The model input has
  // neither: the executor stages it.
  void (*forward)(const CpuLayer& run) = nullptr;
  void (*backward)(const CpuLayer& run) = nullptr;
  // Floats kept from forward to backward for a batch of `batch` (batchnorm's statistics).
  std::int64_t (*state_floats)(const Layer& layer, std::int64_t batch) = nullptr;
  // Scratch floats one call needs for a batch of `batch` in `layout` (im2col buffers).
  std::int64_t (*workspace_floats)(const Layer& layer, std::span<const Layer> before, std::int64_t batch,
                                   Layout layout) = nullptr;
  // The kernels `run` uses, in words, for kiln bench's table ("fwd onednn jit:avx2, bwd kiln").
  std::string (*describe)(const CpuLayer& run) = nullptr;
};

// The CPU op table, in OpKind order, checked by check_cpu_op_table on first use.
std::span<const CpuOp> cpu_op_table();
const CpuOp& cpu_op(OpKind kind);

// Throws std::logic_error naming the first bad slot: a table of the wrong size, an entry
// whose kind is not its index, or one without supports, or without forward and backward
// (every op but the model input, which takes no inputs).
void check_cpu_op_table(std::span<const CpuOp> table);

// Asks every layer's `supports` for `dtype` and `layout`; throws GraphError listing each
// layer the CPU refuses, with the reason (a build error, exit 1).
void require_cpu_support(const Graph& graph, DType dtype, Layout layout);

// What every CPU op supports today: fp32, and fp16 and bf16 emulated (below), in either
// layout. An op with narrower kernels gives its own supports.
std::optional<std::string> cpu_runs_every_dtype(const Layer& layer, DType dtype, Layout layout);

// ---- fp16 and bf16 on the CPU: the oracle of half-precision GPU plans ----------------------
//
// A GPU plan in fp16 or bf16 stores activations, their gradients and the weights the
// convolutions and matrix products read in that type, and computes in fp32 (tensor cores
// accumulate in fp32; batchnorm's statistics and the loss are fp32; the optimizer updates
// fp32 master weights). The CPU emulates it: every value stays a float, but is rounded to
// the dtype (round to nearest even, math/half.hpp) wherever the GPU would store it, so the
// CPU computes what an exact GPU kernel would, up to the order of fp32 sums.
//
// The layers whose parameters a half-precision plan reads in its dtype (conv and linear,
// weights and biases: rounded copies of the fp32 masters); norm layers' scales, shifts and
// statistics stay fp32.
bool params_in_dtype(const Layer& layer);
// Rounds n floats in place to `dtype` (nothing for fp32).
void round_to_dtype(DType dtype, float* p, std::int64_t n, int threads);
// The op's forward, then its output rounded to run.dtype.
void run_forward(const CpuLayer& run);
// The op's backward, then each input gradient rounded to run.dtype (after any accumulation,
// as the GPU adds into a stored gradient), and the parameter gradients of a layer whose
// parameters are in the dtype (its kernels write them in that type).
void run_backward(const CpuLayer& run);

// Per-op entries, one per file in src/layers/: `conv_cpu_op()`, ... (graph/ops.def lists them).
#define KILN_OP(op, Camel) const CpuOp& op##_cpu_op();
#include "graph/ops.def"

}  // namespace kiln::detail
