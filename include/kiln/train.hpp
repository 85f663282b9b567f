#pragma once

/// @file
/// Training: the recipe (TrainConfig), how a run executes (RunOptions), the Trainer with its
/// per-step and per-epoch callbacks, and evaluation results.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/data.hpp"
#include "kiln/export.hpp"
#include "kiln/graph.hpp"
#include "kiln/types.hpp"

namespace kiln {

/// Learning-rate schedule, a factor of `lr` evaluated at every optimizer step.
struct Schedule {
  /// The shape of the schedule.
  enum class Kind : std::uint8_t {
    constant,  ///< 1
    step,      ///< gamma^floor(epoch / every), epoch counted in fractional steps
    cosine,    ///< from 1 to `final` along half a cosine over the run
    linear,    ///< linear from `start` to 1 over the first `warmup` of the run, then to `final`
  };
  Kind kind = Kind::constant;  ///< which schedule
  double every = 1.0;    ///< step: epochs between decays
  double gamma = 0.1;    ///< step: decay factor
  double warmup = 0.0;   ///< linear: fraction of the run spent warming up
  double start = 0.0;    ///< linear: factor at step 0
  double final = 0.0;    ///< cosine, linear: factor at the last step

  /// The factor at `step` of a run of `total` steps with `per_epoch` steps an epoch.
  KILN_API double factor(std::int64_t step, std::int64_t total, std::int64_t per_epoch) const;
};

/// Data augmentation of training images.
struct Augment {
  int crop = 0;       ///< random crop with zero padding of this many pixels (torchvision's RandomCrop)
  int translate = 0;  ///< random translation by up to this many pixels, reflect-padded
  bool flip = false;  ///< random horizontal flip
  /// With `flip`: airbench's alternating flip instead — each image flipped at random once,
  /// then the whole set flipped on every odd epoch.
  bool alternate_flip = false;
  /// True when any augmentation is on.
  bool enabled() const { return crop > 0 || translate > 0 || flip; }
};

/// How weight decay enters the update.
enum class DecayMode : std::uint8_t {
  coupled,        ///< torch.optim.SGD: weight_decay * w added to the gradient
  decoupled,      ///< AdamW-style: w -= lr * weight_decay * w
  /// airbench's: coupled, with coefficient weight_decay / (group's peak lr), so the decay
  /// goes through the momentum and follows the schedule but its size does not depend on
  /// the learning rate or a layer's lr_scale.
  lr_independent,
};

/// Lookahead / EMA of the weights: every `every` steps, ema <- lerp(ema, net, 1 - d) and
/// net <- ema for the parameters and batchnorm statistics, with d = strength * (step /
/// total)^power; the final weights are the averaged ones. `every` 0: off.
struct Lookahead {
  int every = 0;                   ///< steps between averagings; 0: off
  double strength = 0.7737809375;  ///< the final d: 0.95^5
  double power = 3.0;              ///< d ramps as (step / total)^power
};

/// A training recipe: the spec's `train:` section (README "Training options"), overridable
/// from the command line.
struct TrainConfig {
  double epochs = 10;              ///< fractional: the last epoch stops at the step count
  std::int64_t batch = 128;        ///< images per optimizer step
  double lr = 0.01;                ///< peak learning rate
  double momentum = 0.9;           ///< SGD momentum
  bool nesterov = false;           ///< Nesterov momentum
  double weight_decay = 0.0;       ///< L2 on every parameter; coupled as torch.optim.SGD by default
  DecayMode decay_mode = DecayMode::coupled;  ///< how weight_decay enters the update
  Schedule schedule;               ///< the factor of lr at each step
  Lookahead lookahead;             ///< weight averaging; off by default
  bool tta = false;                ///< evaluate with airbench's 6-view test-time augmentation
  std::int64_t whiten_images = 5000;  ///< `init: whiten`: the first N training images
  double whiten_eps = 5e-4;           ///< `init: whiten`: filter i = v_i / sqrt(lambda_i + eps)
  double label_smoothing = 0.0;    ///< of the cross-entropy targets, in [0, 1)
  bool sum_loss = false;           ///< loss reduction: false = batch mean, true = sum
  Augment augment;                 ///< training-image augmentation; none by default
  bool shuffle = true;             ///< a new order of the training set every epoch
  bool drop_last = false;          ///< skip an epoch's last partial batch
  std::uint64_t seed = 0;          ///< initial weights, order, augmentation and dropout
  std::vector<float> mean{0.4914f, 0.4822f, 0.4465f};  ///< per-channel normalization of [0, 1] pixels
  std::vector<float> std{0.2470f, 0.2435f, 0.2616f};  ///< per-channel divisor after `mean`
  bool tf32 = false;               ///< CUDA, fp32: allow TF32 tensor cores (`--tf32` also turns it on)
  /// The recipe's number type (`dtype:` in the train section): fp32, or mixed precision in
  /// bf16 or fp16 (activations and the weights convs and linears read in that type; fp32
  /// master weights, optimizer, batchnorm statistics and loss; fp16 with a dynamic loss
  /// scale). Unset: RunOptions::dtype. The CPU emulates fp16 and bf16 (slowly, for checking).
  std::optional<DType> dtype;
  /// fp16: the dynamic loss scale's first value (`loss_scale:`; PyTorch's GradScaler starts
  /// at 65536 too). It halves whenever a step's gradients overflow (the step is skipped) and
  /// doubles after 2000 good steps in a row. Ignored in fp32 and bf16.
  double loss_scale = 65536;
  /// `mean` and `std` came from the spec's `normalize:`. Otherwise they are CIFAR-10's
  /// published values, and `kiln train` replaces them with the data's (default_normalization()).
  bool normalize_given = false;
  /// The data the model is for (`format:` in the spec): where `kiln train` looks without
  /// `--data`, and the format of the synthetic set it falls back to. Empty: CIFAR-10.
  std::optional<DataFormat> format;
  Cifar100Label label = Cifar100Label::fine;  ///< CIFAR-100's label (`label:` in the spec, `--label`)
};

/// When fit() evaluates the test set.
enum class EvalPolicy : std::uint8_t {
  every_epoch,  ///< after every epoch (and a partial last one)
  at_end,       ///< once, after the last step
  never,        ///< not at all; call Trainer::evaluate() yourself
};

/// How a CUDA run feeds the training set to the device.
enum class Pipeline : std::uint8_t {
  automatic,  ///< resident when the dataset fits in device memory, else stream ("auto")
  resident,   ///< the whole uint8 dataset in device memory; batches gathered there
  stream,     ///< batches through pinned host buffers on a copy stream
};

/// Parses "auto" / "resident" / "stream"; nullopt if unknown.
KILN_API std::optional<Pipeline> parse_pipeline(std::string_view text);
/// "auto", "resident", "stream".
KILN_API std::string_view to_string(Pipeline pipeline);

/// How a run is executed (command-line options rather than recipe). The Trainer checks
/// every field when it is constructed and throws UsageError for a value it cannot use.
struct RunOptions {
  Backend device = Backend::cpu;         ///< where to train
  int threads = 0;                       ///< CPU: 0: all cores, else at least 1 (OpenBLAS is set to one thread: CompileOptions::threads)
  Layout layout = Layout::nchw;          ///< activation layout of the images (both backends)
  CpuConv cpu_conv = CpuConv::automatic;  ///< CPU: convolution kernels (CompileOptions::cpu_conv)
  DType dtype = DType::f32;              ///< fp32, bf16 or fp16, where TrainConfig::dtype is unset (kiln train resolves --dtype against the spec's)
  std::int64_t workspace_limit = -1;     ///< CUDA: bytes of cuDNN workspace per plan; -1: no limit
  bool autotune = false;                 ///< CUDA: time the top cuDNN engines before training
  bool tf32 = false;                     ///< CUDA, fp32: allow TF32 tensor cores (TrainConfig::tf32 also turns it on)
  bool nondeterministic = false;         ///< CUDA: allow nondeterministic cuDNN engines; resume is then not bit-exact
  bool cuda_graph = true;                ///< CUDA: replay each training step as a CUDA graph after a warm-up (--no-cuda-graph: off)
  bool fusion = true;                    ///< CUDA: batchnorm + activation as one kernel each way (--no-fusion: off)
  bool cudnn_fusion = false;             ///< CUDA: such a pair feeding a conv runs in cuDNN's fused conv prologue where cuDNN has engines (--cudnn-fusion; not yet checked on a GPU)
  Pipeline pipeline = Pipeline::automatic;  ///< CUDA: how training batches reach the device
  int device_index = 0;                  ///< CUDA: which device (cudaSetDevice)
  /// Steps [first, last] (from 1) run between cudaProfilerStart and cudaProfilerStop, for
  /// `nsys profile --capture-range=cudaProfilerApi`; none when unset. Nothing to act on
  /// without CUDA.
  std::optional<std::pair<std::int64_t, std::int64_t>> profile_steps;
  std::optional<std::int64_t> max_steps; ///< stop after this many optimizer steps
  std::string out;                       ///< checkpoints and metrics.jsonl; empty: none written
  std::string init;                      ///< initial weights (safetensors)
  std::string resume;                    ///< a directory with train_state.safetensors
  EvalPolicy evaluate = EvalPolicy::every_epoch;  ///< when fit() evaluates the test set
};

/// After each optimizer step.
struct StepEvent {
  std::int64_t step = 0;                 ///< steps done, from 1
  std::int64_t total_steps = 0;          ///< steps the whole run takes
  std::int64_t epoch = 0;                ///< from 0 (an index; metrics.jsonl, the terminal and --json show epoch + 1)
  std::int64_t batch_in_epoch = 0;       ///< batches done in this epoch, from 1
  std::int64_t batches_per_epoch = 0;    ///< optimizer steps in one epoch
  double loss = 0;                       ///< this step's loss as optimized (mean or sum)
  double lr = 0;                         ///< learning rate this step used (scheduled)
  double images_per_sec = 0;             ///< over the epoch so far
  /// fp16: the gradients overflowed at the loss scale, so the update was skipped (and the
  /// scale halved). Not a divergence: training goes on.
  bool skipped = false;
  double loss_scale = 0;                 ///< fp16: the loss scale this step used; 0 without one
};

/// After each epoch (and after a partial last epoch).
struct EpochEvent {
  std::int64_t epoch = 0;                ///< from 0 (an index; metrics.jsonl, the terminal and --json show epoch + 1)
  std::int64_t step = 0;                 ///< optimizer steps done so far
  double train_loss = 0;                 ///< mean per-sample loss over the epoch
  double train_accuracy = 0;             ///< fraction of training images classified right, in [0, 1]
  std::optional<double> test_loss;       ///< mean per-sample loss on the test set, when it was evaluated
  std::optional<double> test_accuracy;   ///< when the test set was evaluated
  std::optional<double> val_loss;        ///< mean per-sample loss on the validation split, when there is one
  std::optional<double> val_accuracy;    ///< when the validation split was evaluated
  double lr = 0;                         ///< learning rate at the epoch's last step
  double images_per_sec = 0;             ///< training throughput over the epoch
  double train_seconds = 0;              ///< the epoch's training loop alone
  double elapsed_sec = 0;                ///< since fit() began, this epoch's evaluation included
  std::int64_t skipped_steps = 0;        ///< fp16: updates skipped in this epoch (StepEvent::skipped)
  double loss_scale = 0;                 ///< fp16: the loss scale after the epoch; 0 without one
};

/// A step's line in OUT/metrics.jsonl (JSON, no newline):
/// {"type":"step","step":S,"epoch":E,"loss":L,"lr":R}, with the epoch counted from 1; in
/// fp16 also "loss_scale" and "skipped".
KILN_API std::string metrics_record(const StepEvent& event);
/// An epoch's line in OUT/metrics.jsonl, also what `kiln train --json` prints:
/// {"type":"epoch","step","epoch" (from 1),"train_loss","train_accuracy","test_loss",
/// "test_accuracy" (both null when the test set was not evaluated after this epoch),
/// "val_loss","val_accuracy" (null without a validation split),"lr","images_per_sec",
/// "train_seconds","elapsed"}; in fp16 also "loss_scale" and "skipped_steps".
KILN_API std::string metrics_record(const EpochEvent& event);
/// The validation line that follows an epoch's line when the validation split was
/// evaluated: {"type":"val","step","epoch" (from 1),"val_loss","val_accuracy"}; empty
/// when it was not.
KILN_API std::string metrics_val_record(const EpochEvent& event);

/// Accuracy of a model on a dataset.
struct Evaluation {
  double accuracy = 0;                   ///< fraction right, in [0, 1]
  double loss = 0;                       ///< mean per-sample cross-entropy
  std::int64_t count = 0;                ///< images evaluated
  std::vector<double> class_accuracy;    ///< per class, in class order
  std::vector<std::vector<std::int64_t>> confusion;  ///< [true][predicted]
};

/// What Trainer::fit() did.
struct TrainResult {
  std::int64_t steps = 0;                ///< optimizer steps done in total (a resumed run included)
  std::int64_t epochs_completed = 0;     ///< whole epochs done
  bool interrupted = false;              ///< stopped by request_stop() (a signal in the CLI)
  std::optional<double> test_accuracy;   ///< the last evaluation's, when one ran
  std::optional<double> val_accuracy;    ///< the last validation's, with a validation split
  double seconds = 0;                    ///< wall time of fit()
  std::int64_t skipped_steps = 0;        ///< fp16: updates skipped in this fit() (StepEvent::skipped)
};

/// Trains a graph with a recipe. The CLI's `kiln train` is a thin client of this class.
class KILN_API Trainer {
 public:
  /// Compiles `graph` for `run.device` and initializes its weights (from `run.init` or
  /// `config.seed`; `run.resume` restores a whole training state). Throws UsageError,
  /// DeviceError or CheckpointError when that cannot be done.
  Trainer(Graph graph, TrainConfig config, RunOptions run);
  ~Trainer();
  /// Moves the trainer; the source may only be destroyed or assigned.
  Trainer(Trainer&&) noexcept;
  /// See the move constructor.
  Trainer& operator=(Trainer&&) noexcept;

  /// Called after every optimizer step, on the calling thread of fit().
  void on_step(std::function<void(const StepEvent&)> callback);
  /// Called after every epoch (and after a partial last one).
  void on_epoch(std::function<void(const EpochEvent&)> callback);

  /// Trains on `data.train`, evaluating after each epoch on `data.val` when it holds a
  /// validation split (the test set then once, at the end), else on `data.test`. Writes
  /// OUT/metrics.jsonl, OUT/train_state.safetensors after each epoch and
  /// OUT/model.safetensors at the end when RunOptions::out is set; with
  /// EvalPolicy::every_epoch also OUT/best.safetensors, the weights of the epoch with the
  /// best validation accuracy so far (test accuracy without a validation split).
  TrainResult fit(const Cifar10& data);
  /// Asks a running fit() to stop after the current step, save and return (signal-safe).
  void request_stop();

  /// The current weights (the averaged ones with lookahead) on `data`, with TTA when the
  /// recipe asks for it.
  Evaluation evaluate(const Dataset& data);
  /// Logits of `n` uint8 images (CIFAR layout), normalized as in training, averaged over
  /// the test-time views when the recipe has `tta` (as evaluate() does).
  std::vector<float> predict(const std::uint8_t* images, std::int64_t n);

  /// Weights as a safetensors file (PyTorch names; batchnorm's num_batches_tracked).
  void save_weights(const std::string& path) const;
  /// Loads weights (safetensors, PyTorch names); throws CheckpointError listing every
  /// mismatch in name, shape or dtype, leaving the weights unchanged.
  void load_weights(const std::string& path);
  /// The graph being trained.
  const Graph& graph() const;
  /// The recipe.
  const TrainConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln
