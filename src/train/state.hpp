#pragma once

// Checkpoints of a running executor: the weights (PyTorch-loadable safetensors) and the
// training state (weights, momentum and position of the run, in one file so that one
// atomic rename switches from one consistent state to the next).
#include <cstdint>
#include <string>

#include "backend/executor.hpp"
#include "kiln/checkpoint.hpp"

namespace kiln::detail {

struct RunPosition {
  std::int64_t step = 0;            // optimizer steps done
  std::int64_t epoch = 0;           // the epoch in progress
  std::int64_t batch_in_epoch = 0;  // batches of that epoch done
};

// Parameters and buffers under their PyTorch names, plus `<bn>.num_batches_tracked`.
SafetensorsFile weights_file(const Executor& executor, std::int64_t batches_tracked);
// Loads weights into the executor, after match_weights() checked every name and shape.
void load_weights_file(Executor& executor, const SafetensorsFile& file, const std::string& path);

// With `ema`, the lookahead averages are saved too (`<name>.ema`).
void save_train_state(const std::string& path, const Executor& executor, const RunPosition& position, std::uint64_t seed,
                      std::int64_t batch, bool ema = false);
// Restores weights, momentum (and the lookahead averages with `ema`); returns the
// position. Throws CheckpointError when the file belongs to another model or was made with
// another batch size or seed.
RunPosition load_train_state(const std::string& path, Executor& executor, std::uint64_t seed, std::int64_t batch,
                             bool ema = false);

}  // namespace kiln::detail
