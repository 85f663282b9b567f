#pragma once

// The device a plan runs on: selected first, then its compute stream and the cuDNN and
// cuBLAS handles bound to that stream. Owners of cuDNN plans declare a DeviceContext before
// them, so the handles outlive every plan finalized with them.
#include <string>

#include "backend/executor.hpp"
#include "cuda/handles.hpp"
#include "cuda/memory.hpp"

namespace kiln::cuda {

class DeviceContext {
 public:
  // Throws DeviceError (kiln's message, not the runtime's) when the options ask for what
  // the backend does not do or there is no device; whatever was created is released.
  explicit DeviceContext(const detail::CudaOptions& options);
  // Waits for the stream (errors ignored) so that memory freed after it is no longer read.
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  int index() const { return index_; }
  const std::string& name() const { return name_; }
  cudaStream_t stream() const { return stream_.get(); }
  cudnnHandle_t cudnn() const { return cudnn_.get(); }
  cublasHandle_t cublas() const { return cublas_.get(); }

 private:
  int index_;          // selected before any member below touches the device
  std::string name_;
  Stream stream_;
  CudnnHandle cudnn_;  // after the stream: destroyed before it
  CublasHandle cublas_;
};

}  // namespace kiln::cuda
