#pragma once

// The cuDNN execution plans of every convolution, at every batch size the plan will see,
// built at construction. Layers of one geometry share one engine choice (resnet20 repeats
// its convolutions); each layer has its own variant pack, bound once to arena pointers.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cuda/exec_plan.hpp"
#include "kiln/graph.hpp"

namespace kiln::cuda {

// The descriptors of one convolution at batch n, as compile (kiln check) finalizes them:
// tensor uids 1..6 (x, w, y, dx, dw, dy), the same for every layer, so plans can be shared.
Status conv_descriptors(ConvOps& out, const Graph& graph, const Layer& layer, std::int64_t n, DType dtype, Layout layout,
                        std::string& failed);

// The build error for a convolution pass cuDNN has no engine for (`where`: "batch 128, fp32,
// nhwc"): a property of the layer on this device, reported like a shape error (exit 1).
GraphError no_engine_error(const Layer& layer, const char* pass, const std::string& where, const NoEngineError& e);

// The plans of one convolution at one batch size; a pass the layer does not need is empty.
struct ConvPlans {
  const ConvOps* ops = nullptr;
  std::optional<ExecPlan> fwd, bwd_data, bwd_filter;
};

// Device pointers of one convolution: dx is the scratch buffer when dx must be added to.
struct ConvBinding {
  void *x = nullptr, *w = nullptr, *y = nullptr, *dx = nullptr, *dw = nullptr, *dy = nullptr, *workspace = nullptr;
};

class ConvPlanCache {
 public:
  // `handle` must outlive the cache (DeviceContext is declared before it).
  ConvPlanCache(cudnnHandle_t handle, DType dtype, Layout layout, const EnginePolicy& policy)
      : handle_(handle), dtype_(dtype), layout_(layout), policy_(policy) {}
  ConvPlanCache(const ConvPlanCache&) = delete;
  ConvPlanCache& operator=(const ConvPlanCache&) = delete;

  // Builds the plans of `layer` at batch n: forward, and backward-data / backward-filter
  // where asked. Throws GraphError naming the layer and quoting cuDNN when it refuses a
  // descriptor or has no engine (within `workspace_limit` bytes, -1: none).
  ConvPlans& build(const Graph& graph, const Layer& layer, std::int64_t n, bool data_grad, bool filter_grad,
                   std::int64_t workspace_limit, int candidates);
  // The plans built for `layer` at batch n, or nullptr; allocates nothing.
  ConvPlans* find(int layer, std::int64_t n);
  void bind(ConvPlans& plans, const ConvBinding& b);
  // The largest workspace any plan needs (with autotuning, any candidate).
  std::int64_t workspace(bool autotune) const;
  void autotune(cudaStream_t stream, int repeats);
  // "fwd engine 12 (heuristics A), ...; dgrad ...; wgrad ..." for `layer` at batch n.
  std::string describe(int layer, std::int64_t n) const;

 private:
  ExecPlan shared(const BackendDescriptor& op, const std::string& key, std::int64_t limit, int candidates,
                  const std::string& what);

  cudnnHandle_t handle_;
  DType dtype_;
  Layout layout_;
  EnginePolicy policy_;
  // Declared in the order they may be destroyed last-first: descriptors outlive the plans
  // finalized from them.
  std::vector<std::unique_ptr<ConvOps>> ops_;
  std::map<std::string, ExecPlan> shared_;  // by geometry, dtype, layout, pass and batch
  std::map<std::pair<int, std::int64_t>, ConvPlans> plans_;  // by layer index and batch
};

}  // namespace kiln::cuda
