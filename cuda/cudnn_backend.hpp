#pragma once

// RAII over cuDNN graph-API (backend) descriptors, and the builders kiln uses for tensors,
// convolutions and pooling. Host code: everything here works without a GPU.
#include <array>
#include <cudnn.h>
#include <cstdint>
#include <span>
#include <string>
#include <utility>

#include "kiln/graph.hpp"
#include "kiln/types.hpp"

namespace kiln::cuda {

// cuDNN's own explanation of the last failure (cudnnGetLastErrorString), or its status name.
std::string cudnn_message(cudnnStatus_t status);

// Owns one cudnnBackendDescriptor_t. Move-only; the destructor never throws.
class BackendDescriptor {
 public:
  BackendDescriptor() = default;
  explicit BackendDescriptor(cudnnBackendDescriptorType_t type);  // throws DeviceError
  ~BackendDescriptor();
  BackendDescriptor(BackendDescriptor&& o) noexcept : desc_(std::exchange(o.desc_, nullptr)) {}
  BackendDescriptor& operator=(BackendDescriptor&& o) noexcept;
  BackendDescriptor(const BackendDescriptor&) = delete;
  BackendDescriptor& operator=(const BackendDescriptor&) = delete;

  cudnnBackendDescriptor_t get() const { return desc_; }
  explicit operator bool() const { return desc_ != nullptr; }

  // Setters return the status; cuDNN reports bad values at finalize, so callers check there.
  cudnnStatus_t set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, std::int64_t count, const void* values);
  cudnnStatus_t set_int64(cudnnBackendAttributeName_t name, std::span<const std::int64_t> values) {
    return set(name, CUDNN_TYPE_INT64, static_cast<std::int64_t>(values.size()), values.data());
  }
  cudnnStatus_t set_descriptor(cudnnBackendAttributeName_t name, const BackendDescriptor& d) {
    cudnnBackendDescriptor_t raw = d.get();
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw);
  }
  cudnnStatus_t finalize();

 private:
  cudnnBackendDescriptor_t desc_ = nullptr;
};

// The outcome of building one descriptor: success, or cuDNN's status and message.
struct Status {
  cudnnStatus_t code = CUDNN_STATUS_SUCCESS;
  std::string message;
  bool ok() const { return code == CUDNN_STATUS_SUCCESS; }
};

cudnnDataType_t cudnn_type(DType dtype);

// Runs a descriptor's setters in order, stopping at the first failure; finalize last and
// returns the first failure's status with cuDNN's words.
class Steps {
 public:
  explicit Steps(BackendDescriptor& d) : d_(d) {}
  Steps& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, std::int64_t count, const void* v);
  Steps& set_int64(cudnnBackendAttributeName_t name, std::span<const std::int64_t> v) {
    return set(name, CUDNN_TYPE_INT64, static_cast<std::int64_t>(v.size()), v.data());
  }
  Steps& set_desc(cudnnBackendAttributeName_t name, const BackendDescriptor& other);
  Status finalize();

 private:
  BackendDescriptor& d_;
  cudnnStatus_t code_ = CUDNN_STATUS_SUCCESS;
};

// Dims [N, C, H, W] and the strides of `layout` (cuDNN always takes dims in NCHW order).
std::array<std::int64_t, 4> strides_for(const std::array<std::int64_t, 4>& dims, Layout layout);

struct TensorDesc {
  BackendDescriptor desc;
  std::int64_t uid = 0;
  std::array<std::int64_t, 4> dims{};
};

// A 4-D tensor descriptor, finalized. Vectors of N features are [batch, N, 1, 1]. A virtual
// tensor is an intermediate of one operation graph, never in memory (a fused graph's).
Status make_tensor(TensorDesc& out, std::int64_t uid, const std::array<std::int64_t, 4>& dims, DType dtype, Layout layout,
                   bool is_virtual = false);

// Convolution geometry in cuDNN's terms (pre = top/left, post = bottom/right padding).
struct ConvGeometry {
  std::array<std::int64_t, 2> stride{1, 1}, dilation{1, 1}, pre_pad{0, 0}, post_pad{0, 0};
};
ConvGeometry conv_geometry(const Attrs& attrs);

// The three finalized convolution operations of one layer and their tensors.
struct ConvOps {
  BackendDescriptor conv;
  TensorDesc x, w, y, dx, dw, dy;
  BackendDescriptor fwd, bwd_data, bwd_filter;
};

// Builds and finalizes the convolution descriptor and its forward, backward-data and
// backward-filter operations for x [N,C,H,W] -> y [N,K,P,Q] with filter [K, C/g, R, S].
// Returns the first failure, naming which descriptor cuDNN refused.
Status make_conv_ops(ConvOps& out, const std::array<std::int64_t, 4>& x, const std::array<std::int64_t, 4>& w,
                     const std::array<std::int64_t, 4>& y, const ConvGeometry& g, DType dtype, Layout layout,
                     std::int64_t uid_base, std::string* failed_part = nullptr);

// Floor-mode pooling as a graph-API resample operation (window, stride, symmetric pad).
struct PoolOps {
  BackendDescriptor resample;
  TensorDesc x, y;
  BackendDescriptor fwd;
};
Status make_pool_fwd(PoolOps& out, bool max, const std::array<std::int64_t, 4>& x, const std::array<std::int64_t, 4>& y,
                     std::array<std::int64_t, 2> window, std::array<std::int64_t, 2> stride, std::array<std::int64_t, 2> pad,
                     DType dtype, Layout layout, std::int64_t uid_base);

}  // namespace kiln::cuda
