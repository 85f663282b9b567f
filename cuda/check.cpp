#include "cuda/check.hpp"

#include <fmt/format.h>
#include <utility>

#include "cuda/cudnn_backend.hpp"
#include "kiln/error.hpp"

namespace kiln::cuda {

namespace {

thread_local const char* g_layer = "";

std::string where(const char* file, int line) {
  std::string w = fmt::format("{}:{}", file, line);
  if (*g_layer) w += fmt::format(", while running {}", g_layer);
  return w;
}

}  // namespace

const char* current_layer() { return g_layer; }

LayerScope::LayerScope(const char* what) noexcept : previous_(std::exchange(g_layer, what ? what : "")) {}
LayerScope::~LayerScope() { g_layer = previous_; }

void throw_cuda(cudaError_t e, const char* expr, const char* file, int line) {
  std::string message = fmt::format("CUDA error {} ({}): {} in {} ({})", static_cast<int>(e), cudaGetErrorName(e),
                                    cudaGetErrorString(e), expr, where(file, line));
  if (e == cudaErrorMemoryAllocation) message += "\n    hint: out of device memory; use a smaller --batch";
  throw DeviceError(message);
}

void throw_cudnn(cudnnStatus_t s, const char* expr, const char* file, int line) {
  throw DeviceError(fmt::format("cuDNN error: {} in {} ({})", cudnn_message(s), expr, where(file, line)));
}

void throw_cublas(cublasStatus_t s, const char* expr, const char* file, int line) {
  throw DeviceError(fmt::format("cuBLAS error {} ({}) in {} ({})", cublasGetStatusName(s), cublasGetStatusString(s), expr,
                                where(file, line)));
}

}  // namespace kiln::cuda
