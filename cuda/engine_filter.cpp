#include "cuda/engine_filter.hpp"

#include <algorithm>
#include <fmt/format.h>

#include "cuda/check.hpp"
#include "cuda/cudnn_backend.hpp"

namespace kiln::cuda {

const char* note_name(cudnnBackendNumericalNote_t note) {
  switch (note) {
    case CUDNN_NUMERICAL_NOTE_TENSOR_CORE: return "tensor core";
    case CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS: return "down-converts inputs";
    case CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION: return "reduced-precision reduction";
    case CUDNN_NUMERICAL_NOTE_FFT: return "FFT";
    case CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC: return "nondeterministic";
    case CUDNN_NUMERICAL_NOTE_WINOGRAD: return "Winograd";
    case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_4x4: return "Winograd 4x4";
    case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_6x6: return "Winograd 6x6";
    case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_13x13: return "Winograd 13x13";
    case CUDNN_NUMERICAL_NOTE_STRICT_NAN_PROP: return "strict NaN propagation";
    case CUDNN_NUMERICAL_NOTE_TYPE_COUNT: break;
  }
  return "unknown note";
}

bool engine_allowed(std::span<const cudnnBackendNumericalNote_t> notes, DType dtype, const EnginePolicy& policy,
                    std::string* why) {
  auto refuse = [&](cudnnBackendNumericalNote_t note, const char* because) {
    if (why) *why = fmt::format("{} ({})", note_name(note), because);
    return false;
  };
  const bool fp32 = dtype == DType::f32;
  for (cudnnBackendNumericalNote_t note : notes) {
    switch (note) {
      case CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC:
        if (policy.deterministic) return refuse(note, "results vary from run to run; --nondeterministic allows it");
        break;
      case CUDNN_NUMERICAL_NOTE_TENSOR_CORE:
      case CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS:
        if (fp32 && !policy.tf32) return refuse(note, "TF32 on fp32 data; --tf32 allows it");
        break;
      case CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION:
        return refuse(note, "kiln's convolutions accumulate in fp32, in every dtype");
        break;
      default: break;  // FFT, Winograd, strict NaN propagation: fp32 arithmetic, deterministic
    }
  }
  return true;
}

std::vector<cudnnBackendNumericalNote_t> engine_notes(cudnnBackendDescriptor_t engine) {
  std::vector<cudnnBackendNumericalNote_t> notes(CUDNN_NUMERICAL_NOTE_TYPE_COUNT);
  std::int64_t count = 0;
  KILN_CUDNN_CHECK(cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                            static_cast<std::int64_t>(notes.size()), &count, notes.data()));
  notes.resize(static_cast<std::size_t>(std::clamp<std::int64_t>(count, 0, CUDNN_NUMERICAL_NOTE_TYPE_COUNT)));
  return notes;
}

std::vector<cudnnBackendNumericalNote_t> engine_config_notes(cudnnBackendDescriptor_t config) {
  BackendDescriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t raw = engine.get();
  std::int64_t count = 0;
  KILN_CUDNN_CHECK(cudnnBackendGetAttribute(config, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count, &raw));
  return engine_notes(raw);
}

}  // namespace kiln::cuda
