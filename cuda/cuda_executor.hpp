#pragma once

// The CUDA backend's executor: one device arena per plan (parameters, gradients, momentum,
// EMA, activations laid out by the memory planner, per-layer state, one cuDNN workspace,
// staging), one compute stream, each layer run through its CUDA op table entry (op_*.cpp).
// In a bf16/fp16 plan (mixed precision) the activations and their gradients are in that
// dtype, and so are the weights convs and linears read and the gradients they write: copies
// of the fp32 masters made before each forward, widened into the fp32 gradients after each
// backward, so that the optimizer, batchnorm's parameters and statistics, the loss and the
// checkpoints stay fp32 (the CPU oracle's contract, backend/cpu_ops.hpp). fp16 adds the
// dynamic loss scale, kept on the device (LossScaler), so a step never waits for the host.
// A training step runs through a StepRecorder (cuda/step_graph.hpp): after a warm-up step
// of its shape it is captured into a CUDA graph and replayed; the values that change per
// step are in device memory (StepValues). Batchnorm + activation pairs run as one kernel
// each way (cuda/fusion.hpp).
// A training step allocates nothing and never waits for the host: cuDNN plans exist for the
// capacity and every size in CudaOptions::batch_sizes from construction (and the workspace is
// sized to them), and for a size given to prepare_batches() before the first step that runs
// it — such plans use the workspace the arena already has, so they may pick slower engines
// than they would with their own. Only a size nobody prepared is planned inside a step (a
// fallback). Loss statistics come back through pinned memory a step later (StatsRing).
//
// Members are destroyed in reverse order of declaration, and that order is the safety of
// the class: the device context (streams, cuDNN and cuBLAS handles) is declared first, so it
// is destroyed last, after the conv plan cache (execution plans finalized with the cuDNN
// handle, variant packs pointing into the arena) and after the arena. The StreamFence
// declared last is destroyed first: queued work finishes before any memory is freed. A
// constructor that throws part-way destroys exactly the members built so far, in that
// same order, fence first.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "backend/executor.hpp"
#include "cuda/conv_plan_cache.hpp"
#include "cuda/device_context.hpp"
#include "cuda/fused_convs.hpp"
#include "cuda/fusion.hpp"
#include "cuda/kernels.hpp"
#include "cuda/memory.hpp"
#include "cuda/op_table.hpp"
#include "cuda/staging.hpp"
#include "cuda/stats_ring.hpp"
#include "cuda/step_graph.hpp"
#include "cuda/step_values.hpp"

namespace kiln::cuda {

class CudaExecutor final : public detail::Executor, private StepRunner {
 public:
  CudaExecutor(const Graph& graph, std::int64_t batch, const detail::CudaOptions& options);
  ~CudaExecutor() override = default;  // fence_ waits for the stream first

  const Graph& graph() const override { return graph_; }
  std::int64_t capacity() const override { return batch_; }
  const MemoryPlan& memory() const override { return plan_; }

  void stage(const detail::HostBatch& batch, const detail::InputTransform& transform) override;
  void forward(bool train, std::uint64_t step) override;
  void loss(const detail::LossOptions& options, bool train, std::int64_t tag) override;
  void backward(std::uint64_t step) override;
  void update(std::span<const math::SgdHyper> hyper) override;
  void collect_stats(bool wait, std::vector<detail::StepStats>& out) override;
  void finish() override;
  std::uint64_t make_resident(const Dataset& data) override;

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
  detail::LossScale loss_scale() const override;
  void set_loss_scale(const detail::LossScale& scale) override;

 private:
  // The constructor's steps, in order.
  void check_memory_before_planning() const;
  void bind_layers_to_graph();
  void build_plans(std::int64_t n, std::int64_t workspace_limit, int candidates);
  void allocate_arena();
  void bind_layers_to_memory();
  void bind_plans(std::int64_t n);

  // A batch size not declared at construction: its plans are built on first use, within the
  // workspace the arena already has (the fallback for a caller that did not declare it).
  void ensure_plans(std::int64_t n);
  void prepare_batches(std::span<const std::int64_t> sizes) override;
  StepContext step_context(bool train);

  // StepRunner: the step's parts, run or captured (cuda_step.cpp).
  void write_step(std::uint64_t step) override;
  void write_hyper(std::span<const math::SgdHyper> hyper) override;
  void enqueue_forward(bool train) override;
  void enqueue_loss(const detail::LossOptions& options, bool train) override;
  void enqueue_backward() override;
  void enqueue_update() override;
  void open_stats(std::int64_t tag) override;
  void ship_stats() override;
  void begin_capture() override;
  std::uint64_t end_capture() override;
  void launch(std::uint64_t graph) override;

  // --cudnn-fusion: the group whose convolution is layer `index`, when cuDNN runs it at this
  // batch (its plans), else nullptr.
  FusedConvPlans* cudnn_group(int index);
  void fused_conv_forward(LayerRun& conv, FusedConvPlans& p, const StepContext& ctx);
  void fused_conv_backward(LayerRun& conv, FusedConvPlans& p, const StepContext& ctx);
  void time_layer(std::size_t index, bool forward);
  // Throws the out-of-memory DeviceError (bytes asked, the plan, the batch that would fit).
  void check_fits(std::int64_t total, std::int64_t param_state, std::int64_t workspace) const;
  void copy_param(std::size_t index, std::span<float> out, const float* base) const;
  void upload_param(std::size_t index, std::span<const float> in, float* base);

  Graph graph_;
  std::int64_t batch_;
  detail::CudaOptions options_;
  FusionPlan fusion_;  // before the memory plan: a group's activation runs at its batchnorm's slots
  MemoryPlan plan_;
  std::vector<std::int64_t> batch_sizes_;  // plans exist for these
  std::vector<LayerRun> runs_;             // host-only bindings, pointing into arena_

  // ---- device resources: destroyed bottom-up, the handles last (see the file comment) ----
  DeviceContext device_;
  DeviceBuffer arena_;
  ConvPlanCache convs_;
  FusedConvs fused_convs_;
  std::vector<int> group_of_conv_;  // per layer: the fused group it is the convolution of, -1
  DeviceBuffer fused_stats_;        // each cuDNN group's genstats output (sum, sum of squares)
  std::vector<std::int64_t> fused_stats_at_;  // per group: its floats' offset
  Staging staging_;
  StatsRing stats_;
  StepValues values_;
  CapturedSteps captured_;
  std::vector<std::pair<Event, Event>> layer_events_;  // profiling

  // Regions of the arena.
  float* params_ = nullptr;
  float* grads_ = nullptr;
  float* momentum_ = nullptr;
  float* ema_ = nullptr;
  std::int64_t param_floats_ = 0;
  std::vector<std::int64_t> param_offset_;  // floats from params_ (and grads_, momentum_, ema_)
  // bf16/fp16: the dtype copies of conv and linear parameters and their gradients, at the
  // masters' offsets counted in dtype elements; in_dtype_ lists those parameters.
  std::byte* dtype_params_ = nullptr;
  std::byte* dtype_grads_ = nullptr;
  std::vector<std::size_t> in_dtype_;
  LossScaler* scaler_ = nullptr;  // fp16 only
  std::byte* activations_ = nullptr;
  float* state_ = nullptr;                   // every layer's state_floats, in layer order
  void* scratch_ = nullptr;
  std::int64_t scratch_bytes_ = 0;
  std::byte* workspace_ = nullptr;
  std::int64_t workspace_bytes_ = 0;
  std::int32_t* labels_ = nullptr;

  std::int64_t n_ = 0;             // samples in the staged batch
  bool last_train_ = false;
  bool profiling_ = false;
  bool capture_notice_ = false;    // a failed capture was reported
  std::vector<detail::LayerTime> times_;
  // Holds a step's calls until update() (const reads of the state flush it first).
  mutable StepRecorder recorder_{*this, options_.cuda_graph};

  StreamFence fence_{device_.stream()};  // last: waits for queued work before anything is freed
};

}  // namespace kiln::cuda
