#pragma once

// One cuDNN graph-API operation made executable on the device: an operation graph, engine
// configurations from the heuristics (mode A, then FALLBACK), the first that the engine
// policy allows (cuda/engine_filter.hpp) and that finalizes within the workspace limit (or, with autotuning, the fastest of the first few), and a
// variant pack built once, since a plan's pointers never change.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cuda/check.hpp"
#include "cuda/cudnn_backend.hpp"
#include "cuda/engine_filter.hpp"
#include "kiln/error.hpp"

namespace kiln::cuda {

// cuDNN offered no engine for an operation (or none within the workspace limit): a property
// of the layer on this device, which the executor reports as a GraphError naming the layer.
class NoEngineError : public DeviceError {
 public:
  NoEngineError(const std::string& what, std::string reason);
  const std::string& reason() const noexcept { return reason_; }

 private:
  std::string reason_;  // cuDNN's own words for the last refusal
};

class ExecPlan {
 public:
  // Throws NoEngineError naming `what` and quoting cuDNN when no engine runs the operation,
  // DeviceError when a cuDNN call fails otherwise. Engines `policy` refuses for a `dtype`
  // operation are skipped (the error then says which note refused the last one).
  ExecPlan(cudnnHandle_t handle, const BackendDescriptor& operation, DType dtype, const EnginePolicy& policy,
           std::int64_t workspace_limit, int candidates, const std::string& what);
  // The same for an operation graph of several operations (a fused group's, cuda/fused_conv.hpp).
  ExecPlan(cudnnHandle_t handle, std::span<const cudnnBackendDescriptor_t> operations, DType dtype,
           const EnginePolicy& policy, std::int64_t workspace_limit, int candidates, const std::string& what);
  // Another binding of the same cuDNN plan (layers of identical shapes share one): the
  // engine choice is shared, the pointers are not.
  ExecPlan share() const;

  std::int64_t workspace() const { return core_->candidates[core_->chosen].workspace; }
  // "engine 12 (heuristics A), 1.5 MiB workspace"
  std::string describe() const;
  std::size_t candidate_count() const { return core_->candidates.size(); }

  // Binds device pointers to tensor uids, and the workspace.
  void bind(std::span<const std::int64_t> uids, std::span<void* const> pointers, void* workspace);
  void execute(cudnnHandle_t handle) const;
  // Times each candidate `repeats` times on the bound pointers and keeps the fastest; the
  // workspace must be large enough for every candidate (max_workspace()).
  void autotune(cudnnHandle_t handle, cudaStream_t stream, int repeats);
  std::int64_t max_workspace() const;

 private:
  struct Candidate {
    BackendDescriptor config;
    BackendDescriptor plan;
    std::int64_t workspace = 0;
    std::int64_t engine = -1;
    const char* mode = "";
    float ms = -1;
  };
  struct Core {
    BackendDescriptor graph;
    std::vector<Candidate> candidates;
    std::size_t chosen = 0;
  };
  ExecPlan() = default;
  void rebind();

  std::shared_ptr<Core> core_;
  BackendDescriptor pack_;
  std::vector<std::int64_t> uids_;
  std::vector<void*> pointers_;
  void* workspace_ptr_ = nullptr;
};

}  // namespace kiln::cuda
