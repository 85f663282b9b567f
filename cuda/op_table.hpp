#pragma once

// The CUDA backend's op table: one entry per OpKind, in OpKind's order (checked when the
// table is first used), each defined in its op's own file (op_conv.cpp, op_pool.cpp, ...).
// `kiln check --target cuda` (compile_cudnn) and CudaExecutor call the same entries, so what
// check reports is what a run does.
#include <cstddef>
#include <cstdint>
#include <cublas_v2.h>
#include <optional>
#include <string>
#include <vector>

#include "cuda/cudnn_backend.hpp"
#include "kiln/cudnn.hpp"
#include "kiln/error.hpp"
#include "kiln/graph.hpp"
#include "kiln/memory.hpp"
#include "math/layout.hpp"

namespace kiln::cuda {

class ConvPlanCache;

// One layer bound to its memory: everything its forward and backward read and write. Made
// at construction; a step only reads it. Activations and their gradients are in the plan's
// dtype (StepContext::dtype). Parameters and their gradients are the fp32 masters, except a
// conv's and a linear's in a bf16/fp16 plan: those point to the dtype copies (the weights
// cuDNN and cuBLAS read, the gradients they write; CudaExecutor casts them each step).
struct LayerRun {
  const Layer* layer = nullptr;
  std::vector<void*> x, dx;      // per input; dx nullptr where that input needs no gradient
  std::vector<bool> accumulate;  // per input: add into dx (another consumer wrote it first)
  void* y = nullptr;
  void* dy = nullptr;            // nullptr: the layer's output does not reach the loss
  std::vector<void*> params, grads;  // grads nullptr where a parameter gets no gradient
  float* state = nullptr;        // the op's state_floats (batchnorm: saved mean, inv std)
  bool view = false;             // a flatten sharing its input's memory
  std::string fwd_name, bwd_name;  // NVTX ranges and error context, made once
};

// What one step gives each layer besides its bindings.
struct StepContext {
  const Graph* graph = nullptr;
  Layout layout = Layout::nchw;
  DType dtype = DType::f32;      // of the activations and their gradients
  std::int64_t n = 0;            // samples in this batch
  bool train = false;
  const std::uint64_t* step = nullptr;  // device memory: keys the dropout masks (StepValues)
  cudaStream_t stream = nullptr;
  cudnnHandle_t cudnn = nullptr;
  cublasHandle_t cublas = nullptr;
  ConvPlanCache* convs = nullptr;
  void* scratch = nullptr;       // a convolution's dx when it must be added, not written

  math::Dims4 dims(const Shape& s) const { return {n, s.c, s.h, s.w, layout == Layout::nhwc && s.is_image()}; }
  math::Dims4 input(const Layer& layer, std::size_t i) const {
    return dims(graph->layers()[static_cast<std::size_t>(layer.inputs[i])].shape);
  }
};

// A FusedGroup's batchnorm and activation (cuda/fusion.hpp) as kiln's fused kernel pair,
// run in the batchnorm's slot (op_batchnorm.cpp): the batchnorm's input, parameters and
// state, the activation's output and its gradient.
// `store` false: the statistics and the affine only (a cuDNN prologue applies them).
void fused_bn_act_forward(LayerRun& bn, const LayerRun& act, const StepContext& ctx, bool store = true);
void fused_bn_act_backward(LayerRun& bn, const LayerRun& act, const StepContext& ctx);

// What the backend compiles for a layer at a target, as `kiln check --target cuda` shows it.
struct OpCompiled {
  std::string path;  // what runs: "graph API: conv fwd, bwd-data, bwd-filter", "kiln kernel: ..."
  int tensors = 0, operations = 0;
};

// What an op with device plans (cuDNN) needs to build them for one batch size, before the
// arena exists: the plans decide the workspace.
struct PrepareContext {
  const Graph* graph = nullptr;
  ConvPlanCache* convs = nullptr;
  std::int64_t n = 0;
  std::int64_t workspace_limit = -1;  // bytes per plan; -1: none
  int candidates = 1;                 // engines kept for autotuning
  bool output_grad = false;           // whether the layer's output gradient exists (dy)
  std::vector<bool> input_grads;      // per input: whether its gradient is wanted
  std::vector<bool> param_grads;      // per parameter: whether it gets a gradient
};

// The PrepareContext of `layer` for a plan whose activations `memory` lays out: which
// gradients its backward must produce. The executor and `kiln check` on a GPU both use it.
PrepareContext prepare_context(const Graph& graph, const MemoryPlan& memory, const Layer& layer, ConvPlanCache& convs,
                               std::int64_t n, std::int64_t workspace_limit, int candidates);

// Where a layer's plans point once the arena exists.
struct BindContext {
  ConvPlanCache* convs = nullptr;
  std::int64_t n = 0;
  void* scratch = nullptr;
  std::byte* workspace = nullptr;
};

struct CudaOp {
  OpKind kind;
  // Why the CUDA backend cannot run `layer` at this dtype and layout; nullopt when it can.
  std::optional<std::string> (*supports)(const Layer& layer, DType dtype, Layout layout);
  // Finalizes the layer's cuDNN descriptors on the host (no device needed); on refusal
  // `failed` names the descriptor cuDNN refused.
  Status (*compile)(const Graph& graph, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed);
  // Floats of per-layer device state (0: none).
  std::int64_t (*state_floats)(const Layer& layer);
  void (*forward)(LayerRun& run, const StepContext& ctx);
  void (*backward)(LayerRun& run, const StepContext& ctx);
  // Device plans for batch n (nullptr: none): built at construction for every batch size.
  void (*prepare)(const Layer& layer, const PrepareContext& ctx) = nullptr;
  void (*bind)(const Layer& layer, const LayerRun& run, const BindContext& ctx) = nullptr;
  // The output shares its input's memory (no kernel runs); nullptr: never.
  bool (*is_view)(const Graph& graph, const Layer& layer, Layout layout) = nullptr;
  // The weight is stored [K, R, S, C] in an NHWC plan (cuDNN's NHWC convolution engines).
  bool krsc_weight_in_nhwc = false;
  // Backward writes input 0's gradient whole (a cuDNN convolution cannot add into it): where
  // another consumer wrote it first, it goes to the scratch buffer and is added from there.
  bool dx_via_scratch = false;
};

// The entry of `kind`. The first call checks that every entry sits in its OpKind's slot.
const CudaOp& cuda_op(OpKind kind);
// Throws std::logic_error naming the first entry out of its slot, or a missing one (a test
// calls it with a mis-slotted table).
void check_op_table(const CudaOp* const* table, std::size_t count);

// The build error of a layer cuDNN refuses: the layer, where in the spec, and cuDNN's words.
Diagnostic cudnn_refusal(const Layer& layer, const std::string& what, const std::string& message);

// The entries, one per file: kConvOp, kMaxPoolOp, ... (graph/ops.def lists them).
#define KILN_OP(op, Camel) extern const CudaOp k##Camel##Op;
#include "graph/ops.def"

// Helpers the entries share.
inline void* first_dx(const LayerRun& run) { return run.dx.empty() ? nullptr : run.dx[0]; }
// A parameter, gradient or input of an op that reads it as fp32 (batchnorm's, groupnorm's).
inline float* f32(void* p) { return static_cast<float*>(p); }
inline bool first_accumulates(const LayerRun& run) { return !run.accumulate.empty() && run.accumulate[0]; }
std::optional<std::string> supported_everywhere(const Layer&, DType, Layout);
std::int64_t no_state(const Layer&);
void no_backward(LayerRun&, const StepContext&);
// The output's tensor descriptor, as every op's compile makes it ([N, C, H, W] or [N, C, 1, 1]).
Status output_tensor(const Layer& layer, const Target& target, std::string& failed);
// The compile of a layer that runs outside cuDNN's graph: `path` for check's report, and the
// output's tensor descriptor.
Status compile_output_only(std::string path, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed);

}  // namespace kiln::cuda
