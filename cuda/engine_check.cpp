// `kiln check --target cuda` on a GPU: whether cuDNN has an engine for each convolution.
#include <fmt/format.h>

#include "cuda/check.hpp"
#include "cuda/cudnn_backend.hpp"
#include "cuda/exec_plan.hpp"
#include "kiln/cudnn.hpp"
#include "kiln/device.hpp"

namespace kiln {

std::vector<std::string> cudnn_unsupported(const Graph& graph, const Target& target) {
  if (cuda_device_count() == 0) throw DeviceError(cuda_unavailable_reason());
  cudnnHandle_t handle = nullptr;
  KILN_CUDNN_CHECK(cudnnCreate(&handle));
  std::vector<std::string> missing;
  try {
    for (const Layer& layer : graph.layers()) {
      if (layer.op != OpKind::conv) continue;
      const Attrs& a = layer.attrs;
      const Shape& in = graph.layers()[static_cast<std::size_t>(layer.inputs[0])].shape;
      cuda::ConvOps ops;
      auto s = cuda::make_conv_ops(ops, {target.batch, in.c, in.h, in.w}, {a.out, in.c / a.groups, a.kernel.h, a.kernel.w},
                                   {target.batch, layer.shape.c, layer.shape.h, layer.shape.w}, cuda::conv_geometry(a),
                                   target.dtype, target.layout, 1);
      if (!s.ok()) {
        missing.push_back(fmt::format("layer '{}': descriptors rejected: {}", layer.name, s.message));
        continue;
      }
      const std::pair<const cuda::BackendDescriptor*, const char*> passes[] = {
          {&ops.fwd, "forward"}, {&ops.bwd_data, "backward-data"}, {&ops.bwd_filter, "backward-filter"}};
      for (auto [op, name] : passes) {
        try {
          cuda::ExecPlan plan(handle, *op, -1, 1, fmt::format("the {} convolution of layer '{}'", name, layer.name));
        } catch (const DeviceError& e) {
          missing.push_back(fmt::format("layer '{}' ({}): {}", layer.name, name, e.what()));
        }
      }
    }
  } catch (...) {
    cudnnDestroy(handle);
    throw;
  }
  cudnnDestroy(handle);
  return missing;
}

}  // namespace kiln
