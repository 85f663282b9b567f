#pragma once

// Owning handles for the libraries' opaque objects: one template, a traits type per kind
// saying how to destroy it. Move-only; the destructor never throws (the library's status
// is ignored there, as in CUTLASS's deleters). Creation goes through make_*, which takes
// ownership before anything else can throw, so a constructor that fails part-way leaks
// nothing.
//
// Destruction order matters for cuDNN: an execution plan or operation graph holds the
// handle it was finalized with, so every owner of plans declares its handle first (it is
// destroyed last). CudaExecutor's members are ordered that way; see cuda_executor.hpp.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <utility>

namespace kiln::cuda {

template <class Traits>
class UniqueHandle {
 public:
  using Raw = typename Traits::Raw;

  UniqueHandle() = default;
  explicit UniqueHandle(Raw raw) noexcept : raw_(raw) {}
  ~UniqueHandle() { reset(); }
  UniqueHandle(UniqueHandle&& o) noexcept : raw_(std::exchange(o.raw_, Raw{})) {}
  UniqueHandle& operator=(UniqueHandle&& o) noexcept {
    if (this != &o) {
      reset();
      raw_ = std::exchange(o.raw_, Raw{});
    }
    return *this;
  }
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;

  Raw get() const noexcept { return raw_; }
  explicit operator bool() const noexcept { return raw_ != Raw{}; }
  void reset() noexcept {
    if (raw_ != Raw{}) Traits::destroy(std::exchange(raw_, Raw{}));
  }

 private:
  Raw raw_{};
};

struct CudnnTraits {
  using Raw = cudnnHandle_t;
  static void destroy(Raw h) noexcept { cudnnDestroy(h); }
};
struct CublasTraits {
  using Raw = cublasHandle_t;
  static void destroy(Raw h) noexcept { cublasDestroy(h); }
};

using CudnnHandle = UniqueHandle<CudnnTraits>;
using CublasHandle = UniqueHandle<CublasTraits>;

// A cuDNN / cuBLAS handle issuing its work on `stream`. Throw DeviceError with the
// library's message (without a GPU: cuDNN's CUDNN_STATUS_NOT_INITIALIZED).
CudnnHandle make_cudnn_handle(cudaStream_t stream);
CublasHandle make_cublas_handle(cudaStream_t stream);

}  // namespace kiln::cuda
