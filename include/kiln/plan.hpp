#pragma once

/// @file
/// A graph compiled for one backend, batch size, dtype and layout: `kiln::compile()` and
/// `kiln::Plan`, the object a program runs inference with and moves weights in and out of.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/checkpoint.hpp"
#include "kiln/cudnn.hpp"
#include "kiln/data.hpp"
#include "kiln/export.hpp"
#include "kiln/graph.hpp"
#include "kiln/memory.hpp"
#include "kiln/train.hpp"
#include "kiln/types.hpp"

namespace kiln {

/// How compile() sets a plan up, beyond its Target.
struct CompileOptions {
  /// CPU: worker threads (OpenMP); 0 uses every core (negative: UsageError). The CPU backend
  /// also sets OpenBLAS to one thread (openblas_set_num_threads(1), process-wide), so that
  /// its pool and OpenMP's do not compete for the same cores; a program using OpenBLAS
  /// itself may set it back.
  int threads = 0;
  /// CPU: which convolution kernels run: per layer the faster of kiln's and oneDNN's
  /// (automatic), or one of them everywhere. The choice is a fixed rule, not a timing, so
  /// two runs of a plan compute the same numbers (see the README, "CPU convolutions").
  CpuConv cpu_conv = CpuConv::automatic;
  /// CUDA: bytes of cuDNN workspace each convolution plan may use; -1: no limit (below -1:
  /// UsageError).
  std::int64_t workspace_limit = -1;
  /// CUDA: time the top cuDNN engine candidates and keep the fastest.
  bool autotune = false;
  /// CUDA: which device (cudaSetDevice).
  int device_index = 0;
  /// CUDA, fp32: let cuDNN and cuBLAS round inputs to TF32 on tensor cores (faster, about
  /// 10 bits of mantissa). Off: fp32 means fp32. Ignored for bf16/fp16 and on the CPU.
  bool tf32 = false;
  /// CUDA: allow cuDNN engines whose results vary from run to run (atomics); resume is then
  /// no longer bit-exact. Off: deterministic. Ignored on the CPU.
  bool nondeterministic = false;
  /// Seed of the initial weights (PyTorch's default initialization, as the Trainer's).
  std::uint64_t seed = 0;
  /// Per-channel normalization of uint8 pixels scaled to [0, 1], applied by Plan::predict
  /// and Plan::evaluate: `(pixel / 255 - mean) / std`. The defaults are TrainConfig's
  /// (CIFAR-10's); set them to the spec's `train.mean` / `train.std` for a spec's model.
  std::vector<float> mean = TrainConfig{}.mean;
  /// See `mean`.
  std::vector<float> std = TrainConfig{}.std;
  /// Plan::predict and Plan::evaluate average airbench's six test-time views (a spec's
  /// `train: tta: true`).
  bool tta = false;
};

class Plan;

/// Compiles a validated graph for `target`: allocates the backend's memory at the memory
/// planner's offsets and initializes the weights from `options.seed`.
///
/// Throws UsageError for a target the backend does not support (the CPU backend runs fp32
/// only; a batch below 1), options out of range (negative threads or device index)
/// or normalization that does not have one value per input
/// channel, DeviceError when the target is CUDA and kiln was built without it or there is
/// no device, or the plan does not fit in device memory; GraphError when cuDNN rejects a
/// layer.
KILN_API Plan compile(const Graph& graph, const Target& target, const CompileOptions& options = {});

/// A graph compiled for one backend, batch size, dtype and layout (see compile()). It
/// owns the backend's memory: weights, activations, workspace. Movable, not copyable; not
/// safe to use from several threads at once.
///
/// Its weights are PyTorch-named tensors (Graph::params()); they move between a Plan and a
/// Trainer through safetensors checkpoints (save_weights() / Trainer::load_weights() and
/// back) or in memory through weights() / set_weights().
class KILN_API Plan {
 public:
  ~Plan();
  /// Moves the compiled plan; the source is left empty and may only be destroyed or assigned.
  Plan(Plan&&) noexcept;
  /// See the move constructor.
  Plan& operator=(Plan&&) noexcept;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  /// The graph the plan was compiled from.
  const Graph& graph() const;
  /// What the plan was compiled for.
  const Target& target() const;
  /// The largest batch one forward pass runs (Target::batch); predict() and evaluate()
  /// split larger inputs into batches of this size.
  std::int64_t batch() const;
  /// Where every activation and gradient buffer lives in the plan's arena, and its sizes.
  const MemoryPlan& memory() const;
  /// The backend in words: "cpu, 2 threads", "cuda, NVIDIA H100 80GB HBM3, fp32, nchw".
  std::string describe() const;

  /// Logits of `n` uint8 images in CIFAR-10's layout (each image C planes of H x W bytes,
  /// the model's input shape), normalized with CompileOptions::mean and std: `n` x
  /// Graph::classes() floats, row-major. Any `n` >= 0; inference mode (batchnorm uses its
  /// running statistics, dropout is off).
  std::vector<float> predict(const std::uint8_t* images, std::int64_t n);
  /// The same for a buffer of whole images; throws UsageError when its size is not a
  /// multiple of one image's bytes.
  std::vector<float> predict(std::span<const std::uint8_t> images);
  /// Logits of decoded images (decode_image()), each brought to the model's input shape by
  /// fit_image() (resized unless `resize` is false, when another size throws DataError).
  std::vector<float> predict(std::span<const Image> images, bool resize = true);
  /// Logits of one PNG or JPEG file: decode_image(), then as above. Throws DataError naming
  /// the file when it is missing or does not decode.
  std::vector<float> predict(const std::string& path, bool resize = true);

  /// Accuracy, mean loss, per-class accuracy and the confusion matrix of the plan's current
  /// weights on `data`. Throws GraphError when the dataset's sample shape or class count
  /// differ from the model's.
  Evaluation evaluate(const Dataset& data);

  /// The values of parameter or buffer `index` (into Graph::params()), in PyTorch's layout.
  /// Throws UsageError for an index out of range.
  std::vector<float> read_param(std::size_t index) const;
  /// The same by PyTorch name (`conv1.weight`); throws UsageError for an unknown name.
  std::vector<float> read_param(std::string_view name) const;
  /// Overwrites parameter or buffer `index`; throws UsageError when `values` does not have
  /// exactly Param::elements values or the index is out of range.
  void write_param(std::size_t index, std::span<const float> values);

  /// Every parameter and buffer under its PyTorch name (with batchnorm's
  /// `num_batches_tracked`), as save_weights() writes them.
  SafetensorsFile weights() const;
  /// Loads weights from a safetensors file's contents. Every parameter and buffer must
  /// match by name and shape; otherwise throws CheckpointError listing every mismatch, with
  /// `source` as its file name, and the plan is unchanged.
  void set_weights(const SafetensorsFile& file, const std::string& source = "<memory>");
  /// Writes the weights as a safetensors file, atomically (write_safetensors()).
  void save_weights(const std::string& path) const;
  /// Reads weights written by save_weights(), Trainer::save_weights(), `kiln train` or
  /// PyTorch (safetensors); throws CheckpointError as set_weights() does.
  void load_weights(const std::string& path);

 private:
  struct Impl;
  explicit Plan(std::unique_ptr<Impl> impl);
  friend Plan compile(const Graph& graph, const Target& target, const CompileOptions& options);

  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln
