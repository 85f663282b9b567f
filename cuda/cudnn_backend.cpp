#include "cuda/cudnn_backend.hpp"

#include <fmt/format.h>

#include "kiln/error.hpp"

namespace kiln::cuda {

std::string cudnn_message(cudnnStatus_t status) {
  char buffer[2048] = {0};
  cudnnGetLastErrorString(buffer, sizeof buffer);
  std::string detail(buffer);
  if (detail.empty()) return cudnnGetErrorString(status);
  return fmt::format("{}: {}", cudnnGetErrorString(status), detail);
}

BackendDescriptor::BackendDescriptor(cudnnBackendDescriptorType_t type) {
  cudnnStatus_t s = cudnnBackendCreateDescriptor(type, &desc_);
  if (s != CUDNN_STATUS_SUCCESS) {
    desc_ = nullptr;
    throw DeviceError(fmt::format("cudnnBackendCreateDescriptor(type {}) failed: {}", static_cast<int>(type), cudnn_message(s)));
  }
}

BackendDescriptor::~BackendDescriptor() {
  if (desc_) cudnnBackendDestroyDescriptor(desc_);
}

BackendDescriptor& BackendDescriptor::operator=(BackendDescriptor&& o) noexcept {
  if (this != &o) {
    if (desc_) cudnnBackendDestroyDescriptor(desc_);
    desc_ = std::exchange(o.desc_, nullptr);
  }
  return *this;
}

cudnnStatus_t BackendDescriptor::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, std::int64_t count,
                                     const void* values) {
  return cudnnBackendSetAttribute(desc_, name, type, count, values);
}

cudnnStatus_t BackendDescriptor::finalize() { return cudnnBackendFinalize(desc_); }

cudnnDataType_t cudnn_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return CUDNN_DATA_FLOAT;
    case DType::f16: return CUDNN_DATA_HALF;
    case DType::bf16: return CUDNN_DATA_BFLOAT16;
  }
  return CUDNN_DATA_FLOAT;
}

std::array<std::int64_t, 4> strides_for(const std::array<std::int64_t, 4>& d, Layout layout) {
  auto [n, c, h, w] = d;
  (void)n;
  if (layout == Layout::nchw) return {c * h * w, h * w, w, 1};
  return {h * w * c, 1, w * c, c};
}


Steps& Steps::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, std::int64_t count, const void* v) {
  if (code_ == CUDNN_STATUS_SUCCESS) code_ = d_.set(name, type, count, v);
  return *this;
}

Steps& Steps::set_desc(cudnnBackendAttributeName_t name, const BackendDescriptor& other) {
  cudnnBackendDescriptor_t raw = other.get();
  return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw);
}

Status Steps::finalize() {
  if (code_ == CUDNN_STATUS_SUCCESS) code_ = d_.finalize();
  if (code_ == CUDNN_STATUS_SUCCESS) return {};
  return {code_, cudnn_message(code_)};
}

Status make_tensor(TensorDesc& out, std::int64_t uid, const std::array<std::int64_t, 4>& dims, DType dtype, Layout layout,
                   bool is_virtual) {
  out.desc = BackendDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  out.uid = uid;
  out.dims = dims;
  auto strides = strides_for(dims, layout);
  cudnnDataType_t type = cudnn_type(dtype);
  const std::int64_t alignment = 16;
  Steps steps(out.desc);
  steps.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type)
      .set_int64(CUDNN_ATTR_TENSOR_DIMENSIONS, dims)
      .set_int64(CUDNN_ATTR_TENSOR_STRIDES, strides)
      .set_int64(CUDNN_ATTR_TENSOR_UNIQUE_ID, std::span(&uid, 1))
      .set_int64(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, std::span(&alignment, 1));
  if (is_virtual) steps.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
  return steps.finalize();
}

ConvGeometry conv_geometry(const Attrs& a) {
  Hw stride = a.stride.value_or(Hw{1, 1});
  return {{stride.h, stride.w}, {a.dilation.h, a.dilation.w}, {a.pad.top, a.pad.left}, {a.pad.bottom, a.pad.right}};
}

Status make_conv_ops(ConvOps& out, const std::array<std::int64_t, 4>& x, const std::array<std::int64_t, 4>& w,
                     const std::array<std::int64_t, 4>& y, const ConvGeometry& g, DType dtype, Layout layout,
                     std::int64_t uid_base, std::string* failed_part) {
  auto fail = [&](const char* part, Status s) {
    if (failed_part) *failed_part = part;
    return s;
  };
  // uids: x, w, y, then their gradients dx, dw, dy.
  std::pair<TensorDesc*, const std::array<std::int64_t, 4>*> tensors[] = {{&out.x, &x},  {&out.w, &w},  {&out.y, &y},
                                                                           {&out.dx, &x}, {&out.dw, &w}, {&out.dy, &y}};
  const char* names[] = {"tensor x", "tensor w", "tensor y", "tensor dx", "tensor dw", "tensor dy"};
  for (int i = 0; i < 6; ++i)
    if (auto s = make_tensor(*tensors[i].first, uid_base + i, *tensors[i].second, dtype, layout); !s.ok()) return fail(names[i], s);

  out.conv = BackendDescriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const std::int64_t spatial = 2;
  if (auto s = Steps(out.conv)
                   .set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute)
                   .set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode)
                   .set_int64(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, std::span(&spatial, 1))
                   .set_int64(CUDNN_ATTR_CONVOLUTION_DILATIONS, g.dilation)
                   .set_int64(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, g.stride)
                   .set_int64(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, g.pre_pad)
                   .set_int64(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, g.post_pad)
                   .finalize();
      !s.ok())
    return fail("convolution", s);

  const float alpha = 1.0f, beta = 0.0f;
  out.fwd = BackendDescriptor(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
  if (auto s = Steps(out.fwd)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, out.x.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, out.w.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, out.y.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, out.conv)
                   .set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha)
                   .set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta)
                   .finalize();
      !s.ok())
    return fail("forward", s);

  out.bwd_data = BackendDescriptor(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR);
  if (auto s = Steps(out.bwd_data)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, out.dx.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, out.w.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, out.dy.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, out.conv)
                   .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha)
                   .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, CUDNN_TYPE_FLOAT, 1, &beta)
                   .finalize();
      !s.ok())
    return fail("backward-data", s);

  out.bwd_filter = BackendDescriptor(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR);
  if (auto s = Steps(out.bwd_filter)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, out.x.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, out.dw.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, out.dy.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, out.conv)
                   .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha)
                   .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA, CUDNN_TYPE_FLOAT, 1, &beta)
                   .finalize();
      !s.ok())
    return fail("backward-filter", s);
  return {};
}

Status make_pool_fwd(PoolOps& out, bool max, const std::array<std::int64_t, 4>& x, const std::array<std::int64_t, 4>& y,
                     std::array<std::int64_t, 2> window, std::array<std::int64_t, 2> stride, std::array<std::int64_t, 2> pad,
                     DType dtype, Layout layout, std::int64_t uid_base) {
  if (auto s = make_tensor(out.x, uid_base, x, dtype, layout); !s.ok()) return s;
  if (auto s = make_tensor(out.y, uid_base + 1, y, dtype, layout); !s.ok()) return s;
  out.resample = BackendDescriptor(CUDNN_BACKEND_RESAMPLE_DESCRIPTOR);
  // PyTorch's avg_pool2d default count_include_pad=True is cuDNN's INCLUDE_PADDING; max
  // pooling pads with -inf so padding never wins.
  cudnnResampleMode_t mode = max ? CUDNN_RESAMPLE_MAXPOOL : CUDNN_RESAMPLE_AVGPOOL_INCLUDE_PADDING;
  cudnnPaddingMode_t padding = max ? CUDNN_NEG_INF_PAD : CUDNN_ZERO_PAD;
  cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  cudnnNanPropagation_t nan = CUDNN_PROPAGATE_NAN;
  const std::int64_t spatial = 2;
  if (auto s = Steps(out.resample)
                   .set(CUDNN_ATTR_RESAMPLE_MODE, CUDNN_TYPE_RESAMPLE_MODE, 1, &mode)
                   .set(CUDNN_ATTR_RESAMPLE_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute)
                   .set_int64(CUDNN_ATTR_RESAMPLE_SPATIAL_DIMS, std::span(&spatial, 1))
                   .set(CUDNN_ATTR_RESAMPLE_PADDING_MODE, CUDNN_TYPE_PADDING_MODE, 1, &padding)
                   .set(CUDNN_ATTR_RESAMPLE_NAN_PROPAGATION, CUDNN_TYPE_NAN_PROPOGATION, 1, &nan)
                   .set_int64(CUDNN_ATTR_RESAMPLE_WINDOW_DIMS, window)
                   .set_int64(CUDNN_ATTR_RESAMPLE_STRIDES, stride)
                   .set_int64(CUDNN_ATTR_RESAMPLE_PRE_PADDINGS, pad)
                   .set_int64(CUDNN_ATTR_RESAMPLE_POST_PADDINGS, pad)
                   .finalize();
      !s.ok())
    return s;
  out.fwd = BackendDescriptor(CUDNN_BACKEND_OPERATION_RESAMPLE_FWD_DESCRIPTOR);
  return Steps(out.fwd)
      .set_desc(CUDNN_ATTR_OPERATION_RESAMPLE_FWD_XDESC, out.x.desc)
      .set_desc(CUDNN_ATTR_OPERATION_RESAMPLE_FWD_YDESC, out.y.desc)
      .set_desc(CUDNN_ATTR_OPERATION_RESAMPLE_FWD_DESC, out.resample)
      .finalize();
}

}  // namespace kiln::cuda
