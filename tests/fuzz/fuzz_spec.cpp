// Fuzz harness: model spec text -> graph. Runs the YAML parser, the train: section parser,
// every op's shape rule and the memory planner at the spec's batch size, as `kiln check`
// does. Any input must either build a graph or throw GraphError with at least one
// diagnostic; anything else (a crash, a sanitizer report, another exception, a hang) is a bug.
// A graph that builds must also be one whose checkpoints can be written: its model and
// parameter names go into a safetensors JSON header, which must be UTF-8.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "kiln/kiln.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    kiln::Spec spec = kiln::parse_spec(text, "fuzz.yaml");
    for (const kiln::Diagnostic& w : spec.graph.warnings()) (void)w.format();
    kiln::MemoryPlan plan = kiln::plan_memory(spec.graph, spec.train.batch, kiln::DType::f32, kiln::PlanMode::train);
    if (plan.arena_bytes < 0 || plan.live_peak < 0) std::abort();
    nlohmann::json names = nlohmann::json::array({spec.graph.name()});
    for (const kiln::Param& p : spec.graph.params()) names.push_back(p.name);
    (void)names.dump();  // throws (uncaught: a finding) on a name that is not UTF-8
  } catch (const kiln::GraphError& e) {
    if (e.diagnostics().empty()) std::abort();  // an error must say what is wrong
    for (const kiln::Diagnostic& d : e.diagnostics()) {
      if (d.message.empty()) std::abort();
      (void)d.format();
    }
  }
  return 0;
}
