#pragma once

// How a compiled plan runs: the backend and its settings, typed and checked in one place.
// RunOptions (the Trainer), CompileOptions (kiln::compile) and BenchOptions all become an
// ExecutionOptions here, so a bad value is refused with the same message whichever way in.
#include <memory>

#include "backend/executor.hpp"
#include "kiln/bench.hpp"
#include "kiln/cudnn.hpp"
#include "kiln/plan.hpp"
#include "kiln/train.hpp"

namespace kiln::detail {

struct ExecutionOptions {
  Backend backend = Backend::cpu;
  int threads = 1;  // CPU worker threads, resolved: at least 1
  CpuConv cpu_conv = CpuConv::automatic;  // CPU: which convolution kernels
  CudaOptions cuda;  // layout and dtype of the activations (both backends), and CUDA's own settings
};

// The number of worker threads `threads` asks for: itself when positive, else every core.
int resolve_threads(int threads);

// Throws UsageError for a value no backend accepts (negative threads, device index or
// workspace limit below -1, an unknown pipeline) or a layout or dtype the CPU backend does
// not run.
ExecutionOptions resolve_options(const RunOptions& run);
ExecutionOptions resolve_options(const Target& target, const CompileOptions& options);
ExecutionOptions resolve_options(const BenchOptions& options);

// The executor of the backend the options name, for batches of up to `batch` images. Only
// compile_plan() calls it.
std::unique_ptr<Executor> make_executor(const Graph& graph, std::int64_t batch, const ExecutionOptions& options);

}  // namespace kiln::detail
