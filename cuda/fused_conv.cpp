#include "cuda/fused_conv.hpp"

#include <fmt/format.h>

#include <optional>
#include <span>

#include "cuda/conv_plan_cache.hpp"
#include "kiln/error.hpp"

namespace kiln::cuda {

namespace {

const Layer& at(const Graph& graph, int index) { return graph.layers()[static_cast<std::size_t>(index)]; }

// A refusal of kiln's own (the pattern cannot take the group), reported like cuDNN's.
Status refused(std::string message) { return {CUDNN_STATUS_NOT_SUPPORTED, std::move(message)}; }

// An activation as cuDNN's pointwise forward: the mode and the parameter that makes it kiln's.
struct PointwiseActivation {
  cudnnPointwiseMode_t mode;
  std::optional<cudnnBackendAttributeName_t> parameter;
  double value = 0;
};

// kiln's gelu is the exact (erf) one, PyTorch's approximate='none': GELU_FWD, never
// GELU_APPROX_TANH_FWD (kiln has no tanh-approximation attribute). silu is SWISH with beta 1;
// leaky_relu is RELU with a lower-clip slope.
std::optional<PointwiseActivation> pointwise_activation(const Layer& act) {
  auto plain = [](cudnnPointwiseMode_t mode) { return PointwiseActivation{.mode = mode, .parameter = std::nullopt, .value = 0}; };
  switch (act.op) {
    case OpKind::relu: return plain(CUDNN_POINTWISE_RELU_FWD);
    case OpKind::leaky_relu:
      return PointwiseActivation{
          .mode = CUDNN_POINTWISE_RELU_FWD, .parameter = CUDNN_ATTR_POINTWISE_RELU_LOWER_CLIP_SLOPE, .value = act.attrs.slope};
    case OpKind::gelu: return plain(CUDNN_POINTWISE_GELU_FWD);
    case OpKind::silu:
      return PointwiseActivation{.mode = CUDNN_POINTWISE_SWISH_FWD, .parameter = CUDNN_ATTR_POINTWISE_SWISH_BETA, .value = 1.0};
    case OpKind::sigmoid: return plain(CUDNN_POINTWISE_SIGMOID_FWD);
    case OpKind::tanh: return plain(CUDNN_POINTWISE_TANH_FWD);
    default: return std::nullopt;
  }
}

Status make_pointwise_mode(BackendDescriptor& out, cudnnPointwiseMode_t mode, const PointwiseActivation* activation = nullptr) {
  out = BackendDescriptor(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  const cudnnDataType_t precision = CUDNN_DATA_FLOAT;
  Steps steps(out);
  steps.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode)
      .set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision);
  if (activation && activation->parameter) steps.set(*activation->parameter, CUDNN_TYPE_DOUBLE, 1, &activation->value);
  return steps.finalize();
}

// y = mode(x) or y = mode(x, b).
Status make_pointwise_op(BackendDescriptor& out, const BackendDescriptor& mode, const TensorDesc& x, const TensorDesc* b,
                         const TensorDesc& y) {
  out = BackendDescriptor(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  Steps steps(out);
  steps.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, mode).set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x.desc);
  if (b) steps.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b->desc);
  return steps.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y.desc).finalize();
}

// scale, bias and the activation on x, into three virtual tensors from `uid`. `failed` is
// set to the refused part.
Status make_prologue(FusedPrologue& out, const FusedConvCompiled& c, const PointwiseActivation& activation,
                     std::int64_t uid, Layout layout, std::string& failed) {
  auto fail = [&](std::string part, Status s) {
    failed = std::move(part);
    return s;
  };
  const auto& dims = c.conv.x.dims;
  for (TensorDesc* t : {&out.scaled, &out.shifted, &out.activated})
    if (auto s = make_tensor(*t, uid++, dims, DType::f32, layout, true); !s.ok()) return fail("virtual tensor descriptor", s);
  if (auto s = make_pointwise_mode(out.mul_mode, CUDNN_POINTWISE_MUL); !s.ok()) return fail("scale pointwise descriptor", s);
  if (auto s = make_pointwise_mode(out.add_mode, CUDNN_POINTWISE_ADD); !s.ok()) return fail("bias pointwise descriptor", s);
  if (auto s = make_pointwise_mode(out.act_mode, activation.mode, &activation); !s.ok())
    return fail("activation pointwise descriptor", s);
  if (auto s = make_pointwise_op(out.mul, out.mul_mode, c.conv.x, &c.scale, out.scaled); !s.ok())
    return fail("scale operation", s);
  if (auto s = make_pointwise_op(out.add, out.add_mode, out.scaled, &c.bias, out.shifted); !s.ok())
    return fail("bias operation", s);
  if (auto s = make_pointwise_op(out.act, out.act_mode, out.shifted, nullptr, out.activated); !s.ok())
    return fail("activation operation", s);
  return {};
}

Status make_graph(BackendDescriptor& out, std::span<const BackendDescriptor* const> operations) {
  // CUDNN_ATTR_OPERATIONGRAPH_HANDLE is deprecated in cuDNN 9 and not needed to finalize:
  // the graph is made here without a device.
  std::vector<cudnnBackendDescriptor_t> raw;
  for (const BackendDescriptor* op : operations) raw.push_back(op->get());
  out = BackendDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  return Steps(out)
      .set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<std::int64_t>(raw.size()), raw.data())
      .finalize();
}

}  // namespace

Status compile_fused_conv(const Graph& graph, const FusedGroup& group, const Target& target, FusedConvCompiled& out,
                          std::string& failed) {
  if (group.conv < 0) {
    failed = "fused convolution";
    return refused(fmt::format("batchnorm '{}' and activation '{}' have no convolution to fuse into", at(graph, group.bn).name,
                               at(graph, group.act).name));
  }
  const Layer& act = at(graph, group.act);
  const std::optional<PointwiseActivation> activation = pointwise_activation(act);
  if (!activation) {
    failed = "activation pointwise descriptor";
    return refused(
        fmt::format("cuDNN's convolution prologue has no pointwise mode for {} (layer '{}')", op_name(act.op), act.name));
  }
  const Layer& conv = at(graph, group.conv);
  const Layout layout = target.layout;
  const std::int64_t channels = at(graph, group.bn).shape.c;

  if (auto s = conv_descriptors(out.conv, graph, conv, target.batch, target.dtype, layout, failed); !s.ok()) return s;
  auto fail = [&](std::string part, Status s) {
    failed = std::move(part);
    return s;
  };
  // The batchnorm's channels scale and shift; the convolution's filters are counted.
  const std::int64_t filters = conv.shape.c;
  const struct {
    TensorDesc* tensor;
    std::int64_t uid, features;
    const char* name;
  } vectors[] = {{&out.scale, 7, channels, "tensor scale descriptor"},
                 {&out.bias, 8, channels, "tensor bias descriptor"},
                 {&out.sum, 9, filters, "tensor sum descriptor"},
                 {&out.sqsum, 10, filters, "tensor sqsum descriptor"}};
  for (const auto& v : vectors)
    if (auto s = make_tensor(*v.tensor, v.uid, {1, v.features, 1, 1}, DType::f32, layout); !s.ok()) return fail(v.name, s);

  // Forward: x -> scale, bias, activation -> conv (w) -> y -> sum, sqsum.
  if (auto s = make_prologue(out.fwd_prologue, out, *activation, 11, layout, failed); !s.ok()) return s;
  const float alpha = 1.0f, beta = 0.0f;
  out.conv_fwd = BackendDescriptor(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
  if (auto s = Steps(out.conv_fwd)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, out.fwd_prologue.activated.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, out.conv.w.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, out.conv.y.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, out.conv.conv)
                   .set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha)
                   .set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta)
                   .finalize();
      !s.ok())
    return fail("fused forward", s);
  const cudnnGenStatsMode_t stats_mode = CUDNN_GENSTATS_SUM_SQSUM;
  const cudnnDataType_t precision = CUDNN_DATA_FLOAT;
  out.genstats = BackendDescriptor(CUDNN_BACKEND_OPERATION_GEN_STATS_DESCRIPTOR);
  if (auto s = Steps(out.genstats)
                   .set(CUDNN_ATTR_OPERATION_GENSTATS_MODE, CUDNN_TYPE_GENSTATS_MODE, 1, &stats_mode)
                   .set(CUDNN_ATTR_OPERATION_GENSTATS_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision)
                   .set_desc(CUDNN_ATTR_OPERATION_GENSTATS_XDESC, out.conv.y.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_GENSTATS_SUMDESC, out.sum.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_GENSTATS_SQSUMDESC, out.sqsum.desc)
                   .finalize();
      !s.ok())
    return fail("genstats", s);
  const FusedPrologue& fp = out.fwd_prologue;
  const BackendDescriptor* fwd_ops[] = {&fp.mul, &fp.add, &fp.act, &out.conv_fwd, &out.genstats};
  if (auto s = make_graph(out.fwd_graph, fwd_ops); !s.ok()) return fail("fused forward operation graph", s);

  // Weight gradient: the same prologue on x (its own virtual tensors), then dw from dy.
  if (auto s = make_prologue(out.wgrad_prologue, out, *activation, 14, layout, failed); !s.ok()) return s;
  out.conv_wgrad = BackendDescriptor(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR);
  if (auto s = Steps(out.conv_wgrad)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, out.wgrad_prologue.activated.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, out.conv.dw.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, out.conv.dy.desc)
                   .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, out.conv.conv)
                   .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha)
                   .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA, CUDNN_TYPE_FLOAT, 1, &beta)
                   .finalize();
      !s.ok())
    return fail("fused backward-filter", s);
  const FusedPrologue& wp = out.wgrad_prologue;
  const BackendDescriptor* wgrad_ops[] = {&wp.mul, &wp.add, &wp.act, &out.conv_wgrad};
  if (auto s = make_graph(out.wgrad_graph, wgrad_ops); !s.ok()) return fail("fused backward-filter operation graph", s);

  // x, scale, bias, w, y, sum, sqsum, dy, dw and three virtual tensors per graph.
  out.tensors = 9 + 3 + 3;
  out.operations = 5 + 4;
  const auto act_name = op_name(act.op);
  out.path = fmt::format("cuDNN graph: scale, bias, {0} -> conv fwd -> genstats; wgrad: scale, bias, {0} -> conv bwd-filter",
                         act_name);
  return {};
}

FinalizedTensor read_tensor(const TensorDesc& tensor) {
  FinalizedTensor out;
  auto get = [&](cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, std::int64_t capacity, void* values) {
    std::int64_t count = 0;
    const cudnnStatus_t s = cudnnBackendGetAttribute(tensor.desc.get(), name, type, capacity, &count, values);
    if (s != CUDNN_STATUS_SUCCESS)
      throw DeviceError(fmt::format("cudnnBackendGetAttribute(tensor uid {}, attribute {}) failed: {}", tensor.uid,
                                    static_cast<int>(name), cudnn_message(s)));
    return count;
  };
  constexpr std::int64_t kMaxDims = 8;
  out.dims.resize(kMaxDims);
  out.dims.resize(static_cast<std::size_t>(get(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, kMaxDims, out.dims.data())));
  out.strides.resize(kMaxDims);
  out.strides.resize(static_cast<std::size_t>(get(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, kMaxDims, out.strides.data())));
  get(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &out.type);
  get(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &out.is_virtual);
  return out;
}

}  // namespace kiln::cuda
