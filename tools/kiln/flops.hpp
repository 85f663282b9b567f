#pragma once

// What `kiln bench` measures speed against: the FLOPs of a training step, counted from the
// graph, and the datasheet peak of the GPU it runs on. Header-only, so the unit tests
// check it without a GPU (tests/unit/bench_flops_test.cpp).
#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

#include "kiln/graph.hpp"
#include "kiln/types.hpp"

namespace kiln::cli {

// FLOPs per sample of one layer in a training step: its forward (Layer::flops, a
// multiply-add counting 2), and a backward counted as twice a conv's or linear's forward (the
// input gradient and the weight gradient, each a GEMM of the forward's size) and as once any
// other layer's forward (element-wise and normalization work, bound by memory anyway).
inline std::int64_t backward_flops(const Layer& layer) {
  return (layer.op == OpKind::conv || layer.op == OpKind::linear ? 2 : 1) * layer.flops;
}
inline std::int64_t train_flops(const Layer& layer) { return layer.flops + backward_flops(layer); }

// A GPU's dense peak for one kind of arithmetic (NVIDIA's datasheets; without sparsity).
struct Peak {
  double tflops = 0;
  std::string_view arithmetic;  // "bf16 tensor cores", "TF32 tensor cores", "fp32"
};

// The peak of the arithmetic a kiln plan in `dtype` runs its convolutions and GEMMs in on
// the GPU named `gpu` (cudaDeviceProp::name): bf16 and fp16 tensor cores (fp32
// accumulation), TF32 tensor cores for fp32 with `tf32`, else plain fp32. nullopt for a GPU
// not in the table (the table lists data-center GPUs; first match wins, so "A100" comes
// before "A10" and "L40S" before "L4").
inline std::optional<Peak> datasheet_peak(std::string_view gpu, DType dtype, bool tf32) {
  struct Row {
    std::string_view name, also;  // both must occur in the name ("" matches anything)
    double half, tf32, fp32;       // dense TFLOP/s: bf16/fp16 tensor, TF32 tensor, fp32
  };
  static constexpr std::array<Row, 7> table{{
      {"H200", "", 989.4, 494.7, 66.9},
      {"H100", "PCIe", 756.5, 378.0, 51.2},
      {"H100", "", 989.4, 494.7, 66.9},  // SXM ("NVIDIA H100 80GB HBM3")
      {"A100", "", 312.0, 156.0, 19.5},
      {"L40S", "", 362.1, 183.0, 91.6},
      {"L4", "", 121.0, 60.0, 30.3},
      {"A10", "", 125.0, 62.5, 31.2},
  }};
  for (const Row& r : table) {
    if (gpu.find(r.name) == std::string_view::npos || gpu.find(r.also) == std::string_view::npos) continue;
    if (dtype == DType::bf16) return Peak{r.half, "bf16 tensor cores"};
    if (dtype == DType::f16) return Peak{r.half, "fp16 tensor cores"};
    if (tf32) return Peak{r.tf32, "TF32 tensor cores"};
    return Peak{r.fp32, "fp32"};
  }
  return std::nullopt;
}

}  // namespace kiln::cli
