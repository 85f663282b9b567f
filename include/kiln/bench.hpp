#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/export.hpp"
#include "kiln/graph.hpp"
#include "kiln/train.hpp"
#include "kiln/types.hpp"

namespace kiln {

struct BenchOptions {
  Backend device = Backend::cpu;
  std::int64_t batch = 128;
  int threads = 0;            ///< 0: all cores
  Layout layout = Layout::nchw;
  DType dtype = DType::f32;
  bool autotune = false;
  int warmup = 3;             ///< untimed training steps first
  int repeats = 7;            ///< timed repetitions; the median is reported
  int steps_per_repeat = 5;   ///< training steps per repetition
};

struct LayerBench {
  std::string name;
  std::string op;
  double forward_ms = 0;      ///< per step
  double backward_ms = 0;     ///< per step
  std::string detail;         ///< CUDA: the cuDNN engines and workspace of a convolution
};

struct BenchResult {
  std::vector<LayerBench> layers;
  std::vector<double> images_per_sec;  ///< one per repetition
  double median_images_per_sec = 0;
  std::int64_t batch = 0;
  int threads = 0;
  std::string backend;                 ///< "cpu, 2 threads"
};

/// Times whole training steps (stage, forward, loss, backward, optimizer) on random data:
/// warm-up, then the median of several timed repetitions; and, in a separate profiled
/// pass, each layer's forward and backward.
KILN_API BenchResult bench(const Graph& graph, const TrainConfig& config, const BenchOptions& options);

}  // namespace kiln
