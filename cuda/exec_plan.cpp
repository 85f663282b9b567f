#include "cuda/exec_plan.hpp"

#include <algorithm>
#include <array>
#include <fmt/format.h>
#include <utility>

#include "cuda/memory.hpp"
#include "kiln/error.hpp"
#include "kiln/format.hpp"

namespace kiln::cuda {

namespace {

std::int64_t engine_index(const BackendDescriptor& config) {
  BackendDescriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t raw = engine.get();
  std::int64_t count = 0;
  if (cudnnBackendGetAttribute(config.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count, &raw) !=
      CUDNN_STATUS_SUCCESS)
    return -1;
  std::int64_t index = -1;
  if (cudnnBackendGetAttribute(raw, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &count, &index) !=
      CUDNN_STATUS_SUCCESS)
    return -1;
  return index;
}

}  // namespace

NoEngineError::NoEngineError(const std::string& what, std::string reason)
    : DeviceError(fmt::format("cuDNN has no engine for {}: {}", what, reason)), reason_(std::move(reason)) {}

ExecPlan::ExecPlan(cudnnHandle_t handle, const BackendDescriptor& operation, DType dtype, const EnginePolicy& policy,
                   std::int64_t workspace_limit, int candidates, const std::string& what)
    : ExecPlan(handle, std::span<const cudnnBackendDescriptor_t>(std::array{operation.get()}), dtype, policy, workspace_limit,
               candidates, what) {}

ExecPlan::ExecPlan(cudnnHandle_t handle, std::span<const cudnnBackendDescriptor_t> operations, DType dtype,
                   const EnginePolicy& policy, std::int64_t workspace_limit, int candidates, const std::string& what)
    : core_(std::make_shared<Core>()) {
  BackendDescriptor& graph = core_->graph;
  std::vector<Candidate>& found = core_->candidates;
  graph = BackendDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  KILN_CUDNN_CHECK(graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                             static_cast<std::int64_t>(operations.size()), operations.data()));
  KILN_CUDNN_CHECK(graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
  if (cudnnStatus_t s = graph.finalize(); s != CUDNN_STATUS_SUCCESS) throw NoEngineError(what, cudnn_message(s));

  std::string last_error = "no engine configuration was offered";
  const std::pair<cudnnBackendHeurMode_t, const char*> modes[] = {{CUDNN_HEUR_MODE_A, "A"}, {CUDNN_HEUR_MODE_FALLBACK, "fallback"}};
  for (auto [mode, mode_name] : modes) {
    if (static_cast<int>(found.size()) >= std::max(1, candidates)) break;
    BackendDescriptor heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    cudnnBackendDescriptor_t g = graph.get();
    KILN_CUDNN_CHECK(heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &g));
    KILN_CUDNN_CHECK(heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode));
    if (cudnnStatus_t s = heur.finalize(); s != CUDNN_STATUS_SUCCESS) {
      last_error = cudnn_message(s);
      continue;
    }
    // Enough that the policy's refusals (on Hopper, most of the fastest fp32 engines are
    // TF32) still leave candidates.
    constexpr int kMaxConfigs = 64;
    std::vector<BackendDescriptor> configs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int i = 0; i < kMaxConfigs; ++i) {
      configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      raw.push_back(configs.back().get());
    }
    std::int64_t returned = 0;
    if (cudnnStatus_t s = cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                                   kMaxConfigs, &returned, raw.data());
        s != CUDNN_STATUS_SUCCESS) {
      last_error = cudnn_message(s);
      continue;
    }
    for (std::int64_t i = 0; i < std::min<std::int64_t>(returned, kMaxConfigs); ++i) {
      if (static_cast<int>(found.size()) >= std::max(1, candidates)) break;
      if (std::string why; !engine_allowed(engine_config_notes(configs[static_cast<std::size_t>(i)].get()), dtype, policy, &why)) {
        last_error = fmt::format("engine {} refused: {}", engine_index(configs[static_cast<std::size_t>(i)]), why);
        continue;
      }
      Candidate c;
      c.plan = BackendDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      cudnnBackendDescriptor_t cfg = configs[static_cast<std::size_t>(i)].get();
      KILN_CUDNN_CHECK(c.plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
      KILN_CUDNN_CHECK(c.plan.set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg));
      if (cudnnStatus_t s = c.plan.finalize(); s != CUDNN_STATUS_SUCCESS) {
        last_error = cudnn_message(s);
        continue;
      }
      std::int64_t count = 0;
      KILN_CUDNN_CHECK(cudnnBackendGetAttribute(c.plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                                                &count, &c.workspace));
      if (workspace_limit >= 0 && c.workspace > workspace_limit) {
        last_error = fmt::format("engine needs {} of workspace, above the limit of {}", format_bytes(c.workspace),
                                 format_bytes(workspace_limit));
        continue;
      }
      c.engine = engine_index(configs[static_cast<std::size_t>(i)]);
      c.mode = mode_name;
      c.config = std::move(configs[static_cast<std::size_t>(i)]);
      found.push_back(std::move(c));
    }
  }
  if (found.empty())
    throw NoEngineError(what, last_error);
}

ExecPlan ExecPlan::share() const {
  ExecPlan copy;
  copy.core_ = core_;
  return copy;
}

std::string ExecPlan::describe() const {
  const Candidate& c = core_->candidates[core_->chosen];
  std::string out = fmt::format("engine {} (heuristics {}), {} workspace", c.engine, c.mode, format_bytes(c.workspace));
  if (c.ms >= 0) out += fmt::format(", {:.3f} ms tuned", c.ms);
  return out;
}

std::int64_t ExecPlan::max_workspace() const {
  std::int64_t m = 0;
  for (const auto& c : core_->candidates) m = std::max(m, c.workspace);
  return m;
}

void ExecPlan::bind(std::span<const std::int64_t> uids, std::span<void* const> pointers, void* workspace) {
  uids_.assign(uids.begin(), uids.end());
  pointers_.assign(pointers.begin(), pointers.end());
  workspace_ptr_ = workspace;
  rebind();
}

void ExecPlan::rebind() {
  pack_ = BackendDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  KILN_CUDNN_CHECK(pack_.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<std::int64_t>(uids_.size()),
                             uids_.data()));
  KILN_CUDNN_CHECK(pack_.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
                             static_cast<std::int64_t>(pointers_.size()), pointers_.data()));
  KILN_CUDNN_CHECK(pack_.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace_ptr_));
  KILN_CUDNN_CHECK(pack_.finalize());
}

void ExecPlan::execute(cudnnHandle_t handle) const {
  KILN_CUDNN_CHECK(cudnnBackendExecute(handle, core_->candidates[core_->chosen].plan.get(), pack_.get()));
}

void ExecPlan::autotune(cudnnHandle_t handle, cudaStream_t stream, int repeats) {
  std::vector<Candidate>& found = core_->candidates;
  std::size_t& chosen = core_->chosen;
  if (found.size() < 2 || found[chosen].ms >= 0) return;  // shared plans are tuned once
  Event start(true), stop(true);
  float best = -1;
  for (std::size_t i = 0; i < found.size(); ++i) {
    chosen = i;
    execute(handle);  // warm-up
    KILN_CUDA_CHECK(cudaEventRecord(start.get(), stream));
    for (int r = 0; r < repeats; ++r) execute(handle);
    KILN_CUDA_CHECK(cudaEventRecord(stop.get(), stream));
    KILN_CUDA_CHECK(cudaEventSynchronize(stop.get()));
    float ms = 0;
    KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()));
    found[i].ms = ms / static_cast<float>(repeats);
    if (best < 0 || found[i].ms < best) best = found[i].ms;
  }
  for (std::size_t i = 0; i < found.size(); ++i)
    if (found[i].ms == best) chosen = i;
}

}  // namespace kiln::cuda
