#pragma once

// Per-step loss and accuracy without a host wait: the loss kernel accumulates into a small
// block in device memory (loss sum, correct count, non-finite-gradient flag); after the step
// the block is copied to the next pinned slot of a ring and cleared, and an event marks the
// copy. The host reads a slot once its event has fired, normally a step later.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend/executor.hpp"
#include "cuda/memory.hpp"

namespace kiln::cuda {

class StatsRing {
 public:
  static constexpr std::size_t kSlots = 64;
  // The device block: double loss sum, unsigned long long correct, unsigned int flag, and
  // float loss scale (fp16's, the step's; 0 where none was written).
  static constexpr std::int64_t kBlockBytes = 32;

  StatsRing();
  StatsRing(const StatsRing&) = delete;
  StatsRing& operator=(const StatsRing&) = delete;

  void bind(std::byte* block) { block_ = block; }
  double* loss_sum() const { return reinterpret_cast<double*>(block_); }
  unsigned long long* correct() const { return reinterpret_cast<unsigned long long*>(block_ + 8); }
  unsigned int* nonfinite() const { return reinterpret_cast<unsigned int*>(block_ + 16); }
  float* loss_scale() const { return reinterpret_cast<float*>(block_ + 20); }

  // Opens the next slot for a loss() of `count` samples recorded under `tag`. Only when 64
  // steps went unread does the host wait, for the oldest.
  void open(std::int64_t tag, std::int64_t count);
  // Issues the copy of the block to the open slot, then clears the block, on `stream`.
  void ship(cudaStream_t stream);
  // The finished records, oldest first (all of them with `wait`).
  void take(bool wait, std::vector<detail::StepStats>& out);  // appends, allocates nothing once grown

 private:
  struct Slot {
    std::int64_t tag = 0, count = 0;
    bool pending = false;
    Event ready;
  };
  void collect(bool wait);

  std::byte* block_ = nullptr;
  std::vector<Slot> slots_;
  PinnedBuffer host_;  // kBlockBytes per slot
  std::size_t head_ = 0, tail_ = 0;
  std::vector<detail::StepStats> collected_;
};

}  // namespace kiln::cuda
