#pragma once

// The plans of the fused groups that run on cuDNN (--cudnn-fusion): for each group ending in
// a convolution (cuda/fusion.hpp), and each batch size, an execution plan for its
// prologue-fused forward with genstats and one for its weight gradient with the same
// prologue (cuda/fused_conv.hpp). A group cuDNN offers no engine for, at any batch size,
// keeps kiln's kernel there (why_not says why). The executor then runs such a group as:
// forward — the batchnorm's statistics and affine (batchnorm_act_forward with no output),
// the fused convolution reading the batchnorm's input; backward — the convolution's
// backward-data as usual, the fused weight gradient, kiln's fused batchnorm + activation
// backward. The activation's output is never stored.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cuda/engine_filter.hpp"
#include "cuda/exec_plan.hpp"
#include "cuda/fused_conv.hpp"
#include "cuda/fusion.hpp"

namespace kiln::cuda {

struct FusedConvPlans {
  std::unique_ptr<FusedConvCompiled> compiled;  // the descriptors the plans were finalized from
  std::optional<ExecPlan> fwd, wgrad;           // wgrad empty where the weight gets no gradient
};

// Device pointers of one group's fused convolution.
struct FusedConvBinding {
  void *x = nullptr, *scale = nullptr, *bias = nullptr, *w = nullptr, *y = nullptr, *sum = nullptr, *sqsum = nullptr;
  void *dy = nullptr, *dw = nullptr, *workspace = nullptr;
};

class FusedConvs {
 public:
  // `handle` must outlive this object (DeviceContext is declared before it).
  FusedConvs(cudnnHandle_t handle, DType dtype, Layout layout, const EnginePolicy& policy)
      : handle_(handle), dtype_(dtype), layout_(layout), policy_(policy) {}
  FusedConvs(const FusedConvs&) = delete;
  FusedConvs& operator=(const FusedConvs&) = delete;

  // Builds the plans of group `g` at batch n (`wgrad`: the weight gets a gradient). Returns
  // false, and records why, when cuDNN refuses a descriptor or offers no engine.
  bool build(const Graph& graph, const FusedGroup& g, int group, std::int64_t n, bool wgrad, std::int64_t workspace_limit);
  FusedConvPlans* find(int group, std::int64_t n);
  bool has(int group, std::int64_t n) const { return plans_.count({group, n}) > 0; }
  void bind(FusedConvPlans& plans, const FusedConvBinding& b);
  std::int64_t workspace() const;
  // Why group `group` runs on kiln's kernel at some batch size; empty when it never does.
  std::string why_not(int group) const;
  // "fused fwd engine 3 (heuristics A), ...; wgrad ..." for group `group` at batch n.
  std::string describe(int group, std::int64_t n) const;

 private:
  cudnnHandle_t handle_;
  DType dtype_;
  Layout layout_;
  EnginePolicy policy_;
  std::map<std::pair<int, std::int64_t>, FusedConvPlans> plans_;  // by group and batch
  std::map<int, std::string> refused_;
};

}  // namespace kiln::cuda
