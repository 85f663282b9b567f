#pragma once

// Every CUDA, cuDNN and cuBLAS call is checked. A failure throws DeviceError naming the
// call, where it was made, the layer being run (kiln::cuda::current_layer), and the
// library's own message (cudaGetErrorString, cudnnGetLastErrorString,
// cublasGetStatusString) — never a bare status number.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <string>

namespace kiln::cuda {

// The layer (and pass) whose work is being issued, for error messages; "" outside. The
// text is not copied: it must outlive the scope that names it (a layer's "conv1/fwd" string
// made at construction, or a literal), so that naming a layer in a step allocates nothing.
const char* current_layer();

[[noreturn]] void throw_cuda(cudaError_t e, const char* expr, const char* file, int line);
[[noreturn]] void throw_cudnn(cudnnStatus_t s, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas(cublasStatus_t s, const char* expr, const char* file, int line);

// Sets the current layer for the lifetime of a scope.
class LayerScope {
 public:
  explicit LayerScope(const char* what) noexcept;
  ~LayerScope();
  LayerScope(const LayerScope&) = delete;
  LayerScope& operator=(const LayerScope&) = delete;

 private:
  const char* previous_;
};

}  // namespace kiln::cuda

#define KILN_CUDA_CHECK(expr)                                                              \
  do {                                                                                     \
    cudaError_t kiln_e_ = (expr);                                                          \
    if (kiln_e_ != cudaSuccess) ::kiln::cuda::throw_cuda(kiln_e_, #expr, __FILE__, __LINE__); \
  } while (0)

#define KILN_CUDNN_CHECK(expr)                                                                   \
  do {                                                                                           \
    cudnnStatus_t kiln_s_ = (expr);                                                              \
    if (kiln_s_ != CUDNN_STATUS_SUCCESS) ::kiln::cuda::throw_cudnn(kiln_s_, #expr, __FILE__, __LINE__); \
  } while (0)

#define KILN_CUBLAS_CHECK(expr)                                                                   \
  do {                                                                                            \
    cublasStatus_t kiln_s_ = (expr);                                                              \
    if (kiln_s_ != CUBLAS_STATUS_SUCCESS) ::kiln::cuda::throw_cublas(kiln_s_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, not at a later sync.
#define KILN_CUDA_LAUNCH_CHECK() KILN_CUDA_CHECK(cudaGetLastError())
