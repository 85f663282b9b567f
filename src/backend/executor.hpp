#pragma once

// A graph compiled for one backend and batch size: the memory it owns and the steps of
// training and evaluation. The trainer drives it; the CPU and CUDA backends implement it.
// Shapes were validated when the graph was built; nothing here checks them again.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kiln/data.hpp"
#include "kiln/graph.hpp"
#include "kiln/memory.hpp"
#include "math/augment.hpp"
#include "math/sgd.hpp"

namespace kiln::detail {

// A batch on the host: uint8 images in CIFAR-10's layout (gathered in order), labels, and
// per-sample augmentation (nullptr: none). `dataset` and `indices` say where the records
// came from, so a backend holding the dataset in device memory gathers them itself.
struct HostBatch {
  std::int64_t n = 0;
  const std::uint8_t* images = nullptr;
  const std::uint8_t* labels = nullptr;
  const math::AugmentParams* augment = nullptr;
  // The content key of a device copy of the batch's dataset (Executor::make_resident): with
  // `indices`, a device backend gathers the batch there instead of uploading `images`. 0: none.
  std::uint64_t resident = 0;
  const std::int64_t* indices = nullptr;
};

// How staged images become the model input: padding mode of the augmentation, and the
// per-channel normalization (pixel/255 - mean) / std.
struct InputTransform {
  math::PadMode pad = math::PadMode::zero;
  std::vector<float> mean;     // one per channel
  std::vector<float> inv_std;  // one per channel
};

// The transform of a normalization given through the API: throws UsageError unless `mean`
// and `std` have one value per input channel of `graph` and every std is positive and finite.
InputTransform make_input_transform(const Graph& graph, const std::vector<float>& mean, const std::vector<float>& std,
                                    math::PadMode pad);

struct LossOptions {
  float label_smoothing = 0.0f;
  bool sum = false;  // false: the batch mean (PyTorch's default)
};

// What one loss() call measured: summed per-sample losses, correct predictions, samples;
// `tag` is the caller's (the optimizer step, or -1 in evaluation).
struct StepStats {
  std::int64_t tag = 0;
  double loss_sum = 0.0;
  std::int64_t correct = 0;
  std::int64_t count = 0;
  bool nonfinite_grad = false;  // a NaN or Inf in the parameter gradients of this step
  // fp16 with loss scaling: the step's gradients overflowed at `loss_scale` and the update
  // was skipped (the scale halved); not a divergence. loss_scale: the scale this step used
  // (1 without scaling).
  bool skipped = false;
  float loss_scale = 1.0f;
};

// fp16's dynamic loss scale (PyTorch's GradScaler): the loss gradient is multiplied by
// `scale` before backward and the parameter gradients divided by it before the update; a
// step whose gradients overflow is skipped and halves the scale, kGrowthInterval good
// steps in a row double it. Saved in the training state so that a resumed run goes on
// with the same scale.
struct LossScale {
  float scale = 1.0f;
  std::int64_t good_steps = 0;  // good steps since the scale last changed
  static constexpr float kInitial = 65536.0f;
  static constexpr std::int64_t kGrowthInterval = 2000;
};

inline StepStats total(const std::vector<StepStats>& all) {
  StepStats t;
  for (const auto& s : all) {
    t.loss_sum += s.loss_sum, t.correct += s.correct, t.count += s.count;
    t.nonfinite_grad = t.nonfinite_grad || s.nonfinite_grad;
    t.skipped = t.skipped || s.skipped;
  }
  return t;
}

// Time spent in one layer's forward and backward since profiling was switched on.
struct LayerTime {
  double forward_ms = 0;
  double backward_ms = 0;
  std::int64_t calls = 0;  // forward calls
  std::string detail;      // backend-specific: the cuDNN engines and workspace of a conv
};

class Executor {
 public:
  virtual ~Executor() = default;

  virtual const Graph& graph() const = 0;
  virtual std::int64_t capacity() const = 0;  // the largest batch
  virtual const MemoryPlan& memory() const = 0;

  // Writes the batch, augmented and normalized, into the input activation.
  virtual void stage(const HostBatch& batch, const InputTransform& transform) = 0;
  // Forward over every layer; `step` keys the dropout masks.
  virtual void forward(bool train, std::uint64_t step) = 0;
  // Loss of the staged labels against the logits, recorded under `tag`; in training also
  // writes the gradient of the logits.
  virtual void loss(const LossOptions& options, bool train, std::int64_t tag) = 0;
  virtual void backward(std::uint64_t step) = 0;
  // One optimizer step; `hyper` has one entry per Graph::params() (ignored for buffers and
  // non-trainable parameters).
  virtual void update(std::span<const math::SgdHyper> hyper) = 0;
  // The records of finished loss() calls, oldest first. Without `wait`, only those already
  // on the host: a device backend copies them asynchronously, so they arrive about a step
  // later and logging never stalls the stream. With `wait`, all of them.
  // Appends them to `out` and forgets them; a caller that keeps `out` between steps makes
  // this allocate nothing.
  virtual void collect_stats(bool wait, std::vector<StepStats>& out) = 0;
  // Returns once every step queued so far has finished, its optimizer update included: a
  // device backend queues work on a stream (what a benchmark must wait for before it stops
  // the clock); the CPU finishes each call before returning.
  virtual void finish() {}
  // The same into a new vector (tests and one-off callers).
  std::vector<StepStats> take_stats(bool wait) {
    std::vector<StepStats> out;
    collect_stats(wait, out);
    return out;
  }
  // Gets ready for batches of these sizes (at most capacity()) before the first step that
  // runs one: the CUDA backend builds the cuDNN plans of a short last batch here, so that
  // none is built in the middle of an epoch. The CPU needs nothing.
  virtual void prepare_batches(std::span<const std::int64_t> sizes) { (void)sizes; }
  // Keeps `data` in device memory so batches from it are gathered there (resident data),
  // and returns the copy's key (detail::content_key) for HostBatch::resident; 0 when the
  // backend does not (the CPU) or it does not fit. Called again with the same contents, it
  // returns the same key without uploading; with other contents, even at the same address,
  // it makes a new copy.
  virtual std::uint64_t make_resident(const Dataset&) { return 0; }

  // n x classes logits of the last forward.
  virtual void read_logits(std::span<float> out) const = 0;
  // Parameters, buffers, and momentum buffers, by index into Graph::params().
  virtual void read_param(std::size_t index, std::span<float> out) const = 0;
  virtual void write_param(std::size_t index, std::span<const float> in) = 0;
  virtual void read_momentum(std::size_t index, std::span<float> out) const = 0;
  virtual void write_momentum(std::size_t index, std::span<const float> in) = 0;
  // Gradients of the last backward (tests and the divergence guard).
  virtual void read_grad(std::size_t index, std::span<float> out) const = 0;

  // Lookahead / EMA over every parameter and buffer: init copies the weights into the
  // average; lookahead(d) sets ema <- lerp(ema, w, 1 - d) and w <- ema.
  virtual void lookahead_init() = 0;
  virtual void lookahead(float decay) = 0;
  virtual void read_ema(std::size_t index, std::span<float> out) const = 0;
  virtual void write_ema(std::size_t index, std::span<const float> in) = 0;

  // The dynamic loss scale of an fp16 plan ({1, 0}, fixed, otherwise).
  virtual LossScale loss_scale() const { return {}; }
  virtual void set_loss_scale(const LossScale& scale) { (void)scale; }

  // Per-layer timing for `kiln bench`: switching it on resets the counters. A backend may
  // synchronize around each layer while it is on, so it is off during training.
  virtual void set_profiling(bool on) = 0;
  virtual std::vector<LayerTime> layer_times() const = 0;
  // A short description of the backend for reports ("cpu, 2 threads").
  virtual std::string describe() const = 0;
};

// Whether parameter `index` gets a gradient and an optimizer step: trainable, and in a
// layer whose output reaches the loss (a layer beside the model keeps its parameters, as
// PyTorch's SGD skips a parameter whose .grad is None).
inline bool gets_gradient(const Graph& graph, const MemoryPlan& plan, std::size_t index) {
  const Param& p = graph.params()[index];
  return p.trainable && plan.gradient[static_cast<std::size_t>(p.layer)] >= 0;
}

// The CPU backend: OpenBLAS, oneDNN and OpenMP with `threads` threads; fp32, or fp16/bf16
// emulated in fp32 (backend/cpu_ops.hpp).
std::unique_ptr<Executor> make_cpu_executor(const Graph& graph, std::int64_t batch, int threads,
                                            Layout layout = Layout::nchw, CpuConv cpu_conv = CpuConv::automatic,
                                            DType dtype = DType::f32);

// How the CUDA backend is set up (RunOptions and `kiln bench` fill it).
struct CudaOptions {
  Layout layout = Layout::nchw;
  DType dtype = DType::f32;
  std::int64_t workspace_limit = -1;  // bytes per cuDNN plan; -1: no limit
  bool autotune = false;              // time the top engine candidates before training
  bool tf32 = false;                  // fp32 convolutions and matmuls may use TF32 tensor cores
  bool deterministic = true;          // refuse cuDNN engines whose results vary run to run
  enum class Pipeline : std::uint8_t { automatic, resident, stream } pipeline = Pipeline::automatic;
  int device = 0;
  // A training step captured into a CUDA graph after a warm-up and replayed (cuda/step_graph.hpp);
  // false: kernel by kernel (--no-cuda-graph, for debugging).
  bool cuda_graph = true;
  // Batchnorm + activation pairs as one kernel each way (cuda/fusion.hpp); false: --no-fusion.
  bool fusion = true;
  // Where such a pair feeds a convolution, apply it in the convolution's prologue with
  // cuDNN's fused graphs when cuDNN has engines for them (cuda/fused_convs.hpp;
  // --cudnn-fusion). Off by default until it has been checked on a GPU.
  bool cudnn_fusion = false;
  // Every batch size the plan will run besides its capacity (a short last batch), so that
  // their cuDNN plans are built at construction; a size not declared is planned on first use.
  std::vector<std::int64_t> batch_sizes;
};

// The CUDA backend: cuDNN graph-API convolutions, cuBLAS for linear layers, kiln kernels
// for the rest. Throws DeviceError when kiln was built without CUDA or there is no device.
std::unique_ptr<Executor> make_cuda_executor(const Graph& graph, std::int64_t batch, const CudaOptions& options);

}  // namespace kiln::detail
