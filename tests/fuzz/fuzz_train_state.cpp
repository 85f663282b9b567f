// Fuzz harness: the training-state loader (`kiln train --resume`), through the internal API
// against a CPU plan of a fixed model, batch 2, seed 0. The input is written to a file.
// Any input must restore a position or be refused with CheckpointError.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "fuzz_util.hpp"
#include "kiln/kiln.hpp"
#include "tiny_model.hpp"
#include "train/state.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const kiln::fuzz::Scratch scratch("train_state");
  static const kiln::Graph graph = kiln::parse_spec(kiln::fuzz::kTinyModel, "tiny.yaml").graph;
  static const std::unique_ptr<kiln::detail::CompiledPlan> plan = [] {
    kiln::detail::PlanSpec spec;
    spec.batch = 2;
    spec.execution.threads = 1;
    spec.input = {kiln::TrainConfig{}.mean, kiln::TrainConfig{}.std};
    return kiln::detail::compile_plan(graph, spec);
  }();
  static const std::string path = scratch.file("train_state.safetensors");
  kiln::fuzz::write_file(path, std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    kiln::detail::RunPosition p = kiln::detail::load_train_state(path, *plan, /*seed=*/0, /*batch=*/2);
    if (p.step < 0 || p.epoch < 0 || p.batch_in_epoch < 0) std::abort();
  } catch (const kiln::CheckpointError& e) {
    if (std::string_view(e.what()).empty()) std::abort();
  }
  return 0;
}
