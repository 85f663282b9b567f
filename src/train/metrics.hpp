#pragma once

// OUT/metrics.jsonl: the lines a run writes (kiln::metrics_record) and what a resumed run
// keeps of them.
#include <cstdint>
#include <filesystem>
#include <optional>

namespace kiln::detail {

// A resumed run continues `path` from step `step`: the lines of steps after it (written
// before an interruption, and about to be run again) and a line cut short by kill -9 go.
// Returns the best test accuracy among the epoch records kept, so that best.safetensors goes
// on being the best of the whole run.
std::optional<double> keep_metrics_until(const std::filesystem::path& path, std::int64_t step);

}  // namespace kiln::detail
