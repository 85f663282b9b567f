#pragma once

// Which cuDNN engines kiln lets a plan use, decided from each engine's numerical notes, a
// pure host function so that the rule is tested without a GPU. cuDNN's heuristics rank
// engines by speed alone: on Ampere and Hopper they put TF32 tensor-core engines (notes
// TENSOR_CORE, DOWN_CONVERT_INPUTS) first for fp32 convolutions, and engines that reduce
// with atomics (NONDETERMINISTIC) anywhere. kiln's defaults are fp32 that is fp32 and
// bit-exact resume; `--tf32` and `--nondeterministic` trade either for speed.
#include <cudnn.h>
#include <span>
#include <string>
#include <vector>

#include "kiln/types.hpp"

namespace kiln::cuda {

struct EnginePolicy {
  bool tf32 = false;          // fp32 convolutions may round their inputs to TF32 on tensor cores
  bool deterministic = true;  // refuse engines whose results vary from run to run
};

// Whether an engine with `notes` may run a `dtype` convolution under `policy`; when not,
// `why` (if given) says which note refused it. TF32 is meaningless for bf16/fp16, whose
// tensor-core engines are the normal path: there `policy.tf32` is ignored. No convolution
// takes an engine that reduces in reduced precision: kiln asks cuDNN for fp32 accumulation
// in every dtype, which is what the CPU oracle computes (bf16/fp16 products summed in fp32).
bool engine_allowed(std::span<const cudnnBackendNumericalNote_t> notes, DType dtype, const EnginePolicy& policy,
                    std::string* why = nullptr);

// The numerical notes of a finalized engine (CUDNN_BACKEND_ENGINE_DESCRIPTOR) or of the
// engine of a finalized engine configuration; throws DeviceError with cuDNN's message.
std::vector<cudnnBackendNumericalNote_t> engine_notes(cudnnBackendDescriptor_t engine);
std::vector<cudnnBackendNumericalNote_t> engine_config_notes(cudnnBackendDescriptor_t config);

// "tensor core", "nondeterministic", ...
const char* note_name(cudnnBackendNumericalNote_t note);

}  // namespace kiln::cuda
