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
  // cuBLAS's workspace, set once (cublasSetWorkspace), so that a GEMM captured into a CUDA
  // graph never allocates: 32 MiB, NVIDIA's recommendation for Hopper, 4 MiB elsewhere.
  // Before the handle: freed after it.
  DeviceBuffer cublas_workspace_;
  CudnnHandle cudnn_;  // after the stream: destroyed before it
  CublasHandle cublas_;
};

// Waits for a stream when destroyed (errors ignored). Declared last in an owner, it is the
// first member destroyed, both when the owner goes and when its constructor throws after
// queuing work, so nothing still queued reads memory the other members free.
class StreamFence {
 public:
  explicit StreamFence(cudaStream_t stream) noexcept : stream_(stream) {}
  ~StreamFence() {
    if (stream_) cudaStreamSynchronize(stream_);
  }
  StreamFence(const StreamFence&) = delete;
  StreamFence& operator=(const StreamFence&) = delete;

 private:
  cudaStream_t stream_;
};

}  // namespace kiln::cuda
