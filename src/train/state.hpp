#pragma once

// The training state of a running plan: weights (plan/weights.hpp), momentum and the
// position of the run, in one file so that one atomic rename switches from one consistent
// state to the next.
#include <cstdint>
#include <string>

#include "kiln/checkpoint.hpp"
#include "plan/compiled_plan.hpp"
#include "plan/weights.hpp"

namespace kiln::detail {

struct RunPosition {
  std::int64_t step = 0;            // optimizer steps done
  std::int64_t epoch = 0;           // the epoch in progress
  std::int64_t batch_in_epoch = 0;  // batches of that epoch done
};

// With `ema`, the lookahead averages are saved too (`<name>.ema`).
void save_train_state(const std::string& path, const CompiledPlan& plan, const RunPosition& position, std::uint64_t seed,
                      std::int64_t batch, bool ema = false);
// Restores weights, momentum (and the lookahead averages with `ema`); returns the
// position. Throws CheckpointError when the file belongs to another model or was made with
// another batch size or seed.
RunPosition load_train_state(const std::string& path, CompiledPlan& plan, std::uint64_t seed, std::int64_t batch,
                             bool ema = false);

}  // namespace kiln::detail
