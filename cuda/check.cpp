#include "cuda/check.hpp"

#include <fmt/format.h>

#include "cuda/cudnn_backend.hpp"
#include "kiln/error.hpp"

namespace kiln::cuda {

namespace {

thread_local std::string g_layer;

std::string where(const char* file, int line) {
  std::string w = fmt::format("{}:{}", file, line);
  if (!g_layer.empty()) w += fmt::format(", while running {}", g_layer);
  return w;
}

}  // namespace

const std::string& current_layer() { return g_layer; }
void set_current_layer(std::string what) { g_layer = std::move(what); }

LayerScope::LayerScope(std::string what) : previous_(std::exchange(g_layer, std::move(what))) {}
LayerScope::~LayerScope() { g_layer = std::move(previous_); }

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
