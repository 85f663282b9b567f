#pragma once

// The values a training step's kernels read that change from step to step — the step
// number (dropout masks) and each parameter's SGD hyperparameters — in device memory, so
// that a step captured into a CUDA graph replays with each step's own values
// (cuda/step_graph.hpp). Written by stream-ordered copies from a small ring of pinned slots:
// a copy is queued before the kernels that read it and after those of the previous step, and
// the host reuses a pinned slot only once its copy has run (normally long before).
// CapturedSteps owns the instantiated graphs.
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cuda/memory.hpp"
#include "math/sgd.hpp"

namespace kiln::cuda {

class StepValues {
 public:
  // Device bytes for a plan of `params` parameters (laid out in the arena's staging region).
  static std::int64_t bytes(std::size_t params);
  explicit StepValues(std::size_t params);
  StepValues(const StepValues&) = delete;
  StepValues& operator=(const StepValues&) = delete;

  void bind(std::byte* device) { device_ = device; }
  const std::uint64_t* step() const { return reinterpret_cast<const std::uint64_t*>(device_); }
  const math::SgdHyper* hyper(std::size_t param) const { return hyper_base() + param; }

  void write_step(std::uint64_t step, cudaStream_t stream);
  void write_hyper(std::span<const math::SgdHyper> hyper, cudaStream_t stream);

 private:
  static constexpr std::size_t kSlots = 16;  // two a step: the host runs up to 8 steps ahead
  static constexpr std::size_t kHyperOffset = 16;  // after the step (8 bytes), aligned
  const math::SgdHyper* hyper_base() const { return reinterpret_cast<const math::SgdHyper*>(device_ + kHyperOffset); }
  // The next pinned slot, once the copy that last read it has run.
  std::byte* next_slot();

  std::size_t params_;
  std::size_t slot_bytes_;
  PinnedBuffer host_;
  std::array<Event, kSlots> copied_;
  std::array<bool, kSlots> used_{};
  std::size_t next_ = 0;
  std::byte* device_ = nullptr;
};

// Stream capture into CUDA graphs, and their instantiations (destroyed with this object).
class CapturedSteps {
 public:
  CapturedSteps() = default;
  ~CapturedSteps();
  CapturedSteps(const CapturedSteps&) = delete;
  CapturedSteps& operator=(const CapturedSteps&) = delete;

  void begin(cudaStream_t stream);
  // The new graph's id (1, 2, ...), or 0 when the capture or instantiation failed (the
  // error is cleared; `why` says what happened, for the one-line notice).
  std::uint64_t end(cudaStream_t stream, std::string& why);
  void launch(std::uint64_t id, cudaStream_t stream) const;
  std::size_t size() const { return execs_.size(); }

 private:
  std::vector<cudaGraphExec_t> execs_;
};

}  // namespace kiln::cuda
