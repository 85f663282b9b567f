#pragma once

/// @file
/// Benchmarks of whole training steps and of each layer (`kiln bench`).

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/export.hpp"
#include "kiln/graph.hpp"
#include "kiln/train.hpp"
#include "kiln/types.hpp"

namespace kiln {

/// What bench() measures and how.
struct BenchOptions {
  Backend device = Backend::cpu;  ///< the backend to time
  int device_index = 0;           ///< CUDA: which device (cudaSetDevice)
  std::int64_t batch = 128;       ///< batch size of every step
  int threads = 0;            ///< 0: all cores
  CpuConv cpu_conv = CpuConv::automatic;  ///< CPU: convolution kernels (CompileOptions::cpu_conv)
  Layout layout = Layout::nchw;   ///< CUDA: activation layout
  DType dtype = DType::f32;       ///< CUDA: activation type
  bool autotune = false;          ///< CUDA: time the top cuDNN engines first
  bool tf32 = false;              ///< CUDA, fp32: allow TF32 tensor cores
  bool nondeterministic = false;  ///< CUDA: allow nondeterministic cuDNN engines
  bool cuda_graph = true;         ///< CUDA: replay each step as a CUDA graph (false: kernel by kernel)
  bool fusion = true;             ///< CUDA: batchnorm + activation as one kernel each way
  bool cudnn_fusion = false;      ///< CUDA: such a pair feeding a conv in cuDNN's fused conv prologue (RunOptions::cudnn_fusion)
  int warmup = 3;             ///< untimed training steps first
  int repeats = 7;            ///< timed repetitions; the median is reported
  int steps_per_repeat = 5;   ///< training steps per repetition
};

/// The time one layer takes.
struct LayerBench {
  std::string name;           ///< the layer's name
  std::string op;             ///< its op, as spelled in a spec
  double forward_ms = 0;      ///< per step
  double backward_ms = 0;     ///< per step
  std::string detail;         ///< CUDA: the cuDNN engines and workspace of a convolution
};

/// What bench() measured.
struct BenchResult {
  std::vector<LayerBench> layers;      ///< every layer but the input, in graph order
  std::vector<double> images_per_sec;  ///< one per repetition
  double median_images_per_sec = 0;    ///< the median of `images_per_sec`
  std::int64_t batch = 0;              ///< the batch size timed
  int threads = 0;                     ///< CPU threads used
  std::string backend;                 ///< "cpu, 2 threads"
};

/// Times whole training steps (stage, forward, loss, backward, optimizer) on random data:
/// warm-up, then the median of several timed repetitions; and, in a separate profiled
/// pass, each layer's forward and backward.
KILN_API BenchResult bench(const Graph& graph, const TrainConfig& config, const BenchOptions& options);

}  // namespace kiln
