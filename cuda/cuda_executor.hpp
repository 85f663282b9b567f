#pragma once

// The CUDA backend's executor: one device arena per plan (parameters, gradients, momentum,
// activations laid out by the memory planner, batchnorm statistics, one cuDNN workspace,
// staging buffers), one stream, cuDNN graph-API plans for convolutions, cuBLAS for linear
// layers, kiln kernels for everything else. A training step allocates nothing and never
// waits for the host; loss statistics come back through pinned memory a step later.
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/executor.hpp"
#include "cuda/check.hpp"
#include "cuda/cudnn_backend.hpp"
#include "cuda/exec_plan.hpp"
#include "cuda/memory.hpp"
#include "math/layout.hpp"

namespace kiln::cuda {

// The three cuDNN plans of one convolution at one batch size.
struct ConvPlans {
  ConvOps ops;
  std::optional<ExecPlan> fwd, bwd_data, bwd_filter;
};

struct LayerRun {
  const Layer* layer = nullptr;
  math::Dims4 out;
  std::vector<math::Dims4> in;
  std::vector<float*> x, dx;
  std::vector<bool> accumulate;
  float* y = nullptr;
  float* dy = nullptr;
  std::vector<float*> params, grads;
  float* save_mean = nullptr;
  float* save_invstd = nullptr;
  bool view = false;                         // a flatten sharing its input's memory
  std::map<std::int64_t, ConvPlans> conv;    // by batch size
  std::string fwd_name, bwd_name;            // NVTX ranges
};

class CudaExecutor final : public detail::Executor {
 public:
  CudaExecutor(const Graph& graph, std::int64_t batch, const detail::CudaOptions& options);
  ~CudaExecutor() override;

  const Graph& graph() const override { return graph_; }
  std::int64_t capacity() const override { return batch_; }
  const MemoryPlan& memory() const override { return plan_; }

  void stage(const detail::HostBatch& batch, const detail::InputTransform& transform) override;
  void forward(bool train, std::uint64_t step) override;
  void loss(const detail::LossOptions& options, bool train, std::int64_t tag) override;
  void backward(std::uint64_t step) override;
  void update(std::span<const math::SgdHyper> hyper) override;
  std::vector<detail::StepStats> take_stats(bool wait) override;
  bool make_resident(const Dataset& data) override;

  void read_logits(std::span<float> out) const override;
  void read_param(std::size_t index, std::span<float> out) const override;
  void write_param(std::size_t index, std::span<const float> in) override;
  void read_momentum(std::size_t index, std::span<float> out) const override;
  void write_momentum(std::size_t index, std::span<const float> in) override;
  void read_grad(std::size_t index, std::span<float> out) const override;

  void lookahead_init() override;
  void lookahead(float decay) override;
  void read_ema(std::size_t index, std::span<float> out) const override;
  void write_ema(std::size_t index, std::span<const float> in) override;

  void set_profiling(bool on) override;
  std::vector<detail::LayerTime> layer_times() const override;
  std::string describe() const override;

 private:
  struct Resident {
    DeviceBuffer images, labels;
  };
  struct StagingSlot {
    PinnedBuffer host;        // images, labels, indices, augment, packed
    std::byte* images = nullptr;
    std::byte* labels = nullptr;
    std::byte* indices = nullptr;
    std::byte* augment = nullptr;
    Event copied, consumed;
  };
  struct StatsSlot {
    std::int64_t tag = 0, count = 0;
    bool pending = false;
    Event ready;
  };

  ConvPlans& conv_plans(LayerRun& run, std::int64_t n);
  ExecPlan plan_for(const BackendDescriptor& op, const std::string& key, std::int64_t limit, int candidates,
                    const std::string& what);
  void bind_conv(LayerRun& run, ConvPlans& p);
  void forward_layer(LayerRun& run, bool train, std::uint64_t step);
  void backward_layer(LayerRun& run, std::uint64_t step);
  void collect(bool wait);
  // Throws the out-of-memory DeviceError (bytes asked, the plan, the batch that would fit).
  void check_fits(std::int64_t total, std::int64_t param_state, std::int64_t workspace) const;
  void copy_param(std::size_t index, std::span<float> out, const float* base) const;
  void upload_param(std::size_t index, std::span<const float> in, float* base);
  math::Dims4 dims(const Shape& s, std::int64_t n) const;

  Graph graph_;
  std::int64_t batch_;
  detail::CudaOptions options_;
  MemoryPlan plan_;
  std::string device_name_;
  Stream stream_, copy_stream_;
  cudnnHandle_t cudnn_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  DeviceBuffer arena_;

  // Regions of the arena.
  float* params_ = nullptr;
  float* grads_ = nullptr;
  float* momentum_ = nullptr;
  float* ema_ = nullptr;
  std::int64_t param_floats_ = 0;
  std::byte* activations_ = nullptr;
  float* scratch_ = nullptr;         // a convolution's dx when it must be added, not written
  std::byte* workspace_ = nullptr;
  std::int64_t workspace_bytes_ = 0;
  std::int32_t* labels_ = nullptr;
  // The step's statistics block: the loss sum (double), the correct count (unsigned long
  // long), the non-finite-gradient flag (unsigned int); copied to pinned memory as one.
  double* loss_sum_ = nullptr;
  bool copy_after_backward_ = false;
  void ship_stats();
  std::int64_t* identity_ = nullptr;
  float* mean_ = nullptr;
  float* inv_std_ = nullptr;
  std::array<std::byte*, 2> stage_images_{}, stage_labels_{}, stage_indices_{}, stage_augment_{};

  std::vector<std::int64_t> param_offset_;
  std::vector<LayerRun> runs_;
  std::map<const Dataset*, Resident> resident_;
  std::array<StagingSlot, 2> staging_;
  int next_slot_ = 0;
  std::vector<StatsSlot> stats_;
  PinnedBuffer stats_host_;          // 16 bytes per stats slot
  std::size_t stats_head_ = 0, stats_tail_ = 0;
  std::vector<detail::StepStats> collected_;
  std::map<std::string, ExecPlan> plan_cache_;  // by shape, dtype, layout, pass and batch
  bool last_train_ = false;
  PinnedBuffer transform_host_;
  std::vector<float> transform_cache_;
  std::int64_t n_ = 0;
  bool profiling_ = false;
  std::vector<detail::LayerTime> times_;
  std::vector<std::pair<Event, Event>> layer_events_;
};

}  // namespace kiln::cuda
