// The one place where a run's options become a backend's: checked, threads resolved, the
// pipeline mapped onto the CUDA backend's own enum.
#include "plan/options.hpp"

#include <fmt/format.h>
#include <thread>

#include "backend/cpu_ops.hpp"
#include "kiln/error.hpp"

namespace kiln {

std::optional<Pipeline> parse_pipeline(std::string_view text) {
  if (text == "auto") return Pipeline::automatic;
  if (text == "resident") return Pipeline::resident;
  if (text == "stream") return Pipeline::stream;
  return std::nullopt;
}

std::string_view to_string(Pipeline pipeline) {
  switch (pipeline) {
    case Pipeline::automatic: return "auto";
    case Pipeline::resident: return "resident";
    case Pipeline::stream: return "stream";
  }
  return "unknown";
}

}  // namespace kiln

namespace kiln::detail {

namespace {

struct Settings {
  Backend backend = Backend::cpu;
  int threads = 0;
  CpuConv cpu_conv = CpuConv::automatic;
  Layout layout = Layout::nchw;
  DType dtype = DType::f32;
  std::int64_t workspace_limit = -1;
  bool autotune = false;
  Pipeline pipeline = Pipeline::automatic;
  int device_index = 0;
  bool tf32 = false;
  bool nondeterministic = false;
  bool cuda_graph = true;
  bool fusion = true;
  bool cudnn_fusion = false;
};

ExecutionOptions resolve(const Settings& s) {
  if (s.backend != Backend::cpu && s.backend != Backend::cuda)
    throw UsageError(fmt::format("unknown backend {}: kiln runs on cpu or cuda", static_cast<int>(s.backend)));
  if (s.threads < 0) throw UsageError(fmt::format("threads must be 0 (every core) or more, got {}", s.threads));
  if (s.workspace_limit < -1)
    throw UsageError(fmt::format("the cuDNN workspace limit must be a number of bytes or -1 (no limit), got {}", s.workspace_limit));
  if (s.device_index < 0) throw UsageError(fmt::format("the CUDA device index must not be negative, got {}", s.device_index));
  if (s.pipeline != Pipeline::automatic && s.pipeline != Pipeline::resident && s.pipeline != Pipeline::stream)
    throw UsageError(fmt::format("--pipeline must be auto, resident or stream, got {}", static_cast<int>(s.pipeline)));
  if (s.dtype != DType::f32 && s.dtype != DType::f16 && s.dtype != DType::bf16)
    throw UsageError(fmt::format("--dtype must be fp32, fp16 or bf16, got {}", static_cast<int>(s.dtype)));
  if (s.cpu_conv != CpuConv::automatic && s.cpu_conv != CpuConv::kiln && s.cpu_conv != CpuConv::onednn)
    throw UsageError(fmt::format("--cpu-conv must be auto, kiln or onednn, got {}", static_cast<int>(s.cpu_conv)));
  if (s.backend == Backend::cpu && s.cpu_conv == CpuConv::onednn && !has_onednn())
    throw UsageError("--cpu-conv onednn: this build of kiln has no oneDNN (install libdnnl-dev and rebuild), use auto or kiln");
  ExecutionOptions o;
  o.backend = s.backend;
  o.threads = resolve_threads(s.threads);
  o.cpu_conv = s.cpu_conv;
  o.cuda.layout = s.layout;
  o.cuda.dtype = s.dtype;
  o.cuda.workspace_limit = s.workspace_limit;
  o.cuda.autotune = s.autotune;
  o.cuda.pipeline = s.pipeline == Pipeline::resident ? CudaOptions::Pipeline::resident
                    : s.pipeline == Pipeline::stream ? CudaOptions::Pipeline::stream
                                                     : CudaOptions::Pipeline::automatic;
  o.cuda.device = s.device_index;
  o.cuda.tf32 = s.tf32 && s.dtype == DType::f32;  // bf16/fp16 use tensor cores anyway
  o.cuda.deterministic = !s.nondeterministic;
  o.cuda.cuda_graph = s.cuda_graph;
  o.cuda.fusion = s.fusion;
  o.cuda.cudnn_fusion = s.fusion && s.cudnn_fusion;
  return o;
}

}  // namespace

int resolve_threads(int threads) {
  if (threads > 0) return threads;
  const unsigned cores = std::thread::hardware_concurrency();
  return cores > 0 ? static_cast<int>(cores) : 1;
}

ExecutionOptions resolve_options(const RunOptions& run) {
  return resolve({.backend = run.device,
                  .threads = run.threads,
                  .cpu_conv = run.cpu_conv,
                  .layout = run.layout,
                  .dtype = run.dtype,
                  .workspace_limit = run.workspace_limit,
                  .autotune = run.autotune,
                  .pipeline = run.pipeline,
                  .device_index = run.device_index,
                  .tf32 = run.tf32,
                  .nondeterministic = run.nondeterministic,
                  .cuda_graph = run.cuda_graph,
                  .fusion = run.fusion,
                  .cudnn_fusion = run.cudnn_fusion});
}

ExecutionOptions resolve_options(const Target& target, const CompileOptions& options) {
  return resolve({.backend = target.backend,
                  .threads = options.threads,
                  .cpu_conv = options.cpu_conv,
                  .layout = target.layout,
                  .dtype = target.dtype,
                  .workspace_limit = options.workspace_limit,
                  .autotune = options.autotune,
                  .device_index = options.device_index,
                  .tf32 = options.tf32,
                  .nondeterministic = options.nondeterministic});
}

ExecutionOptions resolve_options(const BenchOptions& options) {
  return resolve({.backend = options.device,
                  .threads = options.threads,
                  .cpu_conv = options.cpu_conv,
                  .layout = options.layout,
                  .dtype = options.dtype,
                  .autotune = options.autotune,
                  .device_index = options.device_index,
                  .tf32 = options.tf32,
                  .nondeterministic = options.nondeterministic,
                  .cuda_graph = options.cuda_graph,
                  .fusion = options.fusion,
                  .cudnn_fusion = options.cudnn_fusion});
}

std::unique_ptr<Executor> make_executor(const Graph& graph, std::int64_t batch, const ExecutionOptions& options) {
  if (options.backend == Backend::cpu) {
    require_cpu_support(graph, options.cuda.dtype, options.cuda.layout);  // each layer's own word, as a build error
    return make_cpu_executor(graph, batch, options.threads, options.cuda.layout, options.cpu_conv, options.cuda.dtype);
  }
  return make_cuda_executor(graph, batch, options.cuda);
}

}  // namespace kiln::detail
