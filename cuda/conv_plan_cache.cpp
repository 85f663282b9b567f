#include "cuda/conv_plan_cache.hpp"

#include <algorithm>
#include <fmt/format.h>

#include "cuda/op_table.hpp"
#include "graph/op_def.hpp"

namespace kiln::cuda {

Status conv_descriptors(ConvOps& out, const Graph& graph, const Layer& layer, std::int64_t n, DType dtype, Layout layout,
                        std::string& failed) {
  const Attrs& a = layer.attrs;
  const Shape& in = graph.layers()[static_cast<std::size_t>(layer.inputs[0])].shape;
  std::string part;
  Status s = make_conv_ops(out, {n, in.c, in.h, in.w}, {a.out, in.c / a.groups, a.kernel.h, a.kernel.w},
                           {n, layer.shape.c, layer.shape.h, layer.shape.w}, conv_geometry(a), dtype, layout,
                           /*uid_base=*/1, &part);
  if (!s.ok()) failed = part + " descriptor";
  return s;
}

GraphError no_engine_error(const Layer& layer, const char* pass, const std::string& where, const NoEngineError& e) {
  Diagnostic d = cudnn_refusal(layer, fmt::format("{} convolution ({}): cuDNN has no engine for it", pass, where), e.reason());
  const Padding& pad = layer.attrs.pad;
  if (pad.top != pad.bottom || pad.left != pad.right)
    d.hint = fmt::format("its padding differs between sides (top {}, bottom {}, left {}, right {}: pad: same with an even "
                         "kernel), which cuDNN may not run; use an odd kernel, or explicit symmetric padding",
                         pad.top, pad.bottom, pad.left, pad.right);
  else if (e.reason().find("allows it") != std::string::npos)
    d.hint = "kiln refused cuDNN's engines for their numerics (fp32 without TF32, deterministic results); "
             "--tf32 or --nondeterministic lets it use them";
  return GraphError({std::move(d)});
}

ConvPlans& ConvPlanCache::build(const Graph& graph, const Layer& layer, std::int64_t n, bool data_grad, bool filter_grad,
                                std::int64_t workspace_limit, int candidates) {
  const auto id = std::make_pair(layer.index, n);
  if (auto it = plans_.find(id); it != plans_.end()) return it->second;
  const std::string where = fmt::format("batch {}, {}, {}", n, to_string(dtype_), to_string(layout_));
  auto ops = std::make_unique<ConvOps>();
  std::string failed;
  if (Status s = conv_descriptors(*ops, graph, layer, n, dtype_, layout_, failed); !s.ok())
    throw GraphError({cudnn_refusal(layer, fmt::format("{} ({})", failed, where), s.message)});
  const ConvOps& made = *ops_.emplace_back(std::move(ops));

  const Attrs& a = layer.attrs;
  const Shape& in = graph.layers()[static_cast<std::size_t>(layer.inputs[0])].shape;
  const std::string key = fmt::format("{}x{}x{}x{}>{}x{}x{} k{}x{} s{}x{} d{}x{} p{},{},{},{} g{} {} {}", n, in.c, in.h, in.w,
                                      layer.shape.c, layer.shape.h, layer.shape.w, a.kernel.h, a.kernel.w, a.stride->h,
                                      a.stride->w, a.dilation.h, a.dilation.w, a.pad.top, a.pad.bottom, a.pad.left, a.pad.right,
                                      a.groups, to_string(dtype_), to_string(layout_));
  // No engine is a property of the layer on this device, not a failure of the run: a build
  // error naming the layer and quoting cuDNN.
  auto plan = [&](const BackendDescriptor& op, const char* pass, const char* tag) {
    try {
      return shared(op, fmt::format("{} {}", tag, key), workspace_limit, candidates,
                    fmt::format("the {} convolution of layer '{}' ({})", pass, layer.name, where));
    } catch (const NoEngineError& e) {
      throw no_engine_error(layer, pass, where, e);
    }
  };
  ConvPlans p;
  p.ops = &made;
  p.fwd.emplace(plan(made.fwd, "forward", "fwd"));
  if (data_grad) p.bwd_data.emplace(plan(made.bwd_data, "backward-data", "dgrad"));
  if (filter_grad) p.bwd_filter.emplace(plan(made.bwd_filter, "backward-filter", "wgrad"));
  return plans_.emplace(id, std::move(p)).first->second;
}

ExecPlan ConvPlanCache::shared(const BackendDescriptor& op, const std::string& key, std::int64_t limit, int candidates,
                               const std::string& what) {
  auto it = shared_.find(key);
  if (it == shared_.end()) it = shared_.emplace(key, ExecPlan(handle_, op, dtype_, policy_, limit, candidates, what)).first;
  return it->second.share();
}

ConvPlans* ConvPlanCache::find(int layer, std::int64_t n) {
  auto it = plans_.find(std::make_pair(layer, n));
  return it == plans_.end() ? nullptr : &it->second;
}

void ConvPlanCache::bind(ConvPlans& p, const ConvBinding& b) {
  const std::int64_t uid = p.ops->x.uid;  // x, w, y, dx, dw, dy: uid + 0..5 (make_conv_ops)
  if (p.fwd) {
    const std::int64_t u[] = {uid, uid + 1, uid + 2};
    void* const ptr[] = {b.x, b.w, b.y};
    p.fwd->bind(u, ptr, b.workspace);
  }
  if (p.bwd_data) {
    const std::int64_t u[] = {uid + 3, uid + 1, uid + 5};
    void* const ptr[] = {b.dx, b.w, b.dy};
    p.bwd_data->bind(u, ptr, b.workspace);
  }
  if (p.bwd_filter) {
    const std::int64_t u[] = {uid, uid + 4, uid + 5};
    void* const ptr[] = {b.x, b.dw, b.dy};
    p.bwd_filter->bind(u, ptr, b.workspace);
  }
}

std::int64_t ConvPlanCache::workspace(bool autotune) const {
  std::int64_t most = 0;
  for (const auto& [id, p] : plans_)
    for (const auto* plan : {&p.fwd, &p.bwd_data, &p.bwd_filter})
      if (*plan) most = std::max(most, autotune ? (*plan)->max_workspace() : (*plan)->workspace());
  return most;
}

void ConvPlanCache::autotune(cudaStream_t stream, int repeats) {
  for (auto& [id, p] : plans_)
    for (auto* plan : {&p.fwd, &p.bwd_data, &p.bwd_filter})
      if (*plan) (*plan)->autotune(handle_, stream, repeats);
}

std::string ConvPlanCache::describe(int layer, std::int64_t n) const {
  auto it = plans_.find(std::make_pair(layer, n));
  if (it == plans_.end()) return {};
  const ConvPlans& p = it->second;
  std::string out;
  if (p.fwd) out += "fwd " + p.fwd->describe();
  if (p.bwd_data) out += "; dgrad " + p.bwd_data->describe();
  if (p.bwd_filter) out += "; wgrad " + p.bwd_filter->describe();
  return out;
}

}  // namespace kiln::cuda
