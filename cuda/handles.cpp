#include "cuda/handles.hpp"

#include "cuda/check.hpp"

namespace kiln::cuda {

CudnnHandle make_cudnn_handle(cudaStream_t stream) {
  cudnnHandle_t raw = nullptr;
  KILN_CUDNN_CHECK(cudnnCreate(&raw));
  CudnnHandle handle(raw);  // owned before the next call can throw
  KILN_CUDNN_CHECK(cudnnSetStream(raw, stream));
  return handle;
}

CublasHandle make_cublas_handle(cudaStream_t stream) {
  cublasHandle_t raw = nullptr;
  KILN_CUBLAS_CHECK(cublasCreate(&raw));
  CublasHandle handle(raw);
  KILN_CUBLAS_CHECK(cublasSetStream(raw, stream));
  return handle;
}

}  // namespace kiln::cuda
