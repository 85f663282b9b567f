// compile_cudnn: every layer of a validated graph as cuDNN graph-API descriptors, finalized
// on the host. What cuDNN refuses here it would refuse at run time, so it is reported now,
// with cuDNN's own words, before any memory is allocated.
#include <fmt/format.h>

#include "cuda/cudnn_backend.hpp"
#include "graph/op_def.hpp"
#include "kiln/cudnn.hpp"

namespace kiln {

namespace {

std::array<std::int64_t, 4> dims4(const Shape& s, std::int64_t batch) { return {batch, s.c, s.h, s.w}; }

// Unique ids per layer: 16 slots each (outputs, weights, gradients; see make_conv_ops).
std::int64_t uid_base(const Layer& layer) { return static_cast<std::int64_t>(layer.index) * 16; }

// Whether kiln's pooling output equals cuDNN's (floor mode, symmetric padding): then the
// windows are identical and cuDNN computes exactly PyTorch's result.
bool cudnn_pool_matches(const Layer& layer, const Shape& in) {
  const Attrs& a = layer.attrs;
  Hw s = a.stride.value_or(a.kernel);
  std::int64_t fh = (in.h + 2 * a.pad.top - a.kernel.h) / s.h + 1;
  std::int64_t fw = (in.w + 2 * a.pad.left - a.kernel.w) / s.w + 1;
  return fh == layer.shape.h && fw == layer.shape.w;
}

}  // namespace

CudnnReport compile_cudnn(const Graph& graph, const Target& target) {
  if (target.batch < 1) throw UsageError(fmt::format("batch must be at least 1, got {}", target.batch));
  CudnnReport report;
  std::vector<Diagnostic> rejected;
  auto layers = graph.layers();
  std::string where = fmt::format("batch {}, {}, {}", target.batch, to_string(target.dtype), to_string(target.layout));

  for (const Layer& layer : layers) {
    CudnnLayerReport row{layer.name, std::string(op_name(layer.op)), "tensor descriptors", 0};
    auto reject = [&](const std::string& part, const cuda::Status& s) {
      Diagnostic d;
      d.loc = layer.loc;
      d.layer = layer.name;
      d.context = detail::describe_layer(layer, true);
      d.message = fmt::format("cuDNN rejects its {} descriptor ({}): {}", part, where, s.message);
      d.hint = "kiln's shape rules accepted this layer, so kiln and cuDNN disagree here; please report it with this spec";
      rejected.push_back(std::move(d));
    };
    const Shape in = layer.inputs.empty() ? layer.shape : layers[static_cast<std::size_t>(layer.inputs[0])].shape;

    if (layer.op == OpKind::conv) {
      const Attrs& a = layer.attrs;
      cuda::ConvOps ops;
      std::string part;
      auto s = cuda::make_conv_ops(ops, dims4(in, target.batch), {a.out, in.c / a.groups, a.kernel.h, a.kernel.w},
                                   dims4(layer.shape, target.batch), cuda::conv_geometry(a), target.dtype, target.layout,
                                   uid_base(layer), &part);
      if (!s.ok()) {
        reject(part, s);
      } else {
        row.path = "graph API: conv fwd, bwd-data, bwd-filter";
        row.descriptors = 6 + 1 + 3;
        report.tensors += 6;
        report.operations += 3;
      }
    } else if (layer.op == OpKind::maxpool || layer.op == OpKind::avgpool) {
      const Attrs& a = layer.attrs;
      if (cudnn_pool_matches(layer, in)) {
        Hw stride = a.stride.value_or(a.kernel);
        cuda::PoolOps ops;
        auto s = cuda::make_pool_fwd(ops, layer.op == OpKind::maxpool, dims4(in, target.batch), dims4(layer.shape, target.batch),
                                     {a.kernel.h, a.kernel.w}, {stride.h, stride.w}, {a.pad.top, a.pad.left}, target.dtype,
                                     target.layout, uid_base(layer));
        if (!s.ok()) {
          reject("resample (pooling)", s);
        } else {
          row.path = fmt::format("graph API: resample fwd ({})", op_name(layer.op));
          row.descriptors = 2 + 1 + 1;
          report.tensors += 2;
          report.operations += 1;
        }
      } else {
        // cuDNN has no ceil mode (and averages a clipped window differently): kiln's kernel.
        cuda::TensorDesc y;
        auto s = cuda::make_tensor(y, uid_base(layer), dims4(layer.shape, target.batch), target.dtype, target.layout);
        if (!s.ok()) reject("output tensor", s);
        row.path = "kiln kernel: ceil-mode pooling (cuDNN has no ceil mode)";
        row.descriptors = 1;
        report.tensors += 1;
      }
    } else {
      // Flatten is a view of its input; every other output gets the descriptor the CUDA
      // backend uses for it (vectors as [N, features, 1, 1]).
      if (layer.op != OpKind::flatten) {
        cuda::TensorDesc y;
        auto s = cuda::make_tensor(y, uid_base(layer), dims4(layer.shape, target.batch), target.dtype, target.layout);
        if (!s.ok()) {
          reject("output tensor", s);
        } else {
          row.descriptors = 1;
          report.tensors += 1;
        }
      } else {
        row.path = "view of its input";
      }
      if (layer.op == OpKind::linear) row.path = "cuBLAS GEMM; tensor descriptors";
    }
    report.layers.push_back(std::move(row));
  }
  if (!rejected.empty()) throw GraphError(std::move(rejected));
  return report;
}

}  // namespace kiln
