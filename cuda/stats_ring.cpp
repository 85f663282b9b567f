#include "cuda/stats_ring.hpp"

#include <cstring>
#include <utility>

#include "cuda/check.hpp"
#include "math/loss_scale.hpp"

namespace kiln::cuda {

StatsRing::StatsRing() : slots_(kSlots), host_(kSlots * static_cast<std::size_t>(kBlockBytes)) {}

void StatsRing::open(std::int64_t tag, std::int64_t count) {
  if (slots_[head_ % kSlots].pending) collect(true);  // more than 64 unread steps
  Slot& slot = slots_[head_ % kSlots];
  slot.tag = tag;
  slot.count = count;
}

void StatsRing::ship(cudaStream_t stream) {
  Slot& slot = slots_[head_ % kSlots];
  std::byte* host = host_.data() + (head_ % kSlots) * static_cast<std::size_t>(kBlockBytes);
  KILN_CUDA_CHECK(cudaMemcpyAsync(host, block_, kBlockBytes, cudaMemcpyDeviceToHost, stream));
  KILN_CUDA_CHECK(cudaEventRecord(slot.ready.get(), stream));
  KILN_CUDA_CHECK(cudaMemsetAsync(block_, 0, kBlockBytes, stream));
  slot.pending = true;
  ++head_;
}

void StatsRing::take(bool wait, std::vector<detail::StepStats>& out) {
  collect(wait);
  out.insert(out.end(), collected_.begin(), collected_.end());
  collected_.clear();  // keeps its capacity
}

void StatsRing::collect(bool wait) {
  while (tail_ < head_) {
    Slot& slot = slots_[tail_ % kSlots];
    if (wait) {
      KILN_CUDA_CHECK(cudaEventSynchronize(slot.ready.get()));
    } else {
      cudaError_t e = cudaEventQuery(slot.ready.get());
      if (e == cudaErrorNotReady) break;
      KILN_CUDA_CHECK(e);
    }
    const std::byte* host = host_.data() + (tail_ % kSlots) * static_cast<std::size_t>(kBlockBytes);
    double loss = 0;
    unsigned long long correct = 0;
    unsigned int nonfinite = 0;
    std::memcpy(&loss, host, 8);
    std::memcpy(&correct, host + 8, 8);
    float scale = 0.0f;
    std::memcpy(&nonfinite, host + 16, 4);
    std::memcpy(&scale, host + 20, 4);
    detail::StepStats stats{.tag = slot.tag, .loss_sum = loss, .correct = static_cast<std::int64_t>(correct), .count = slot.count};
    // fp16's loss scale (written only in training with loss scaling; 0 otherwise): gradients
    // that overflowed at a scale above 1 skip the update; at 1 they are a divergence.
    stats.loss_scale = scale > 0.0f ? scale : 1.0f;
    stats.skipped = math::loss_scale_skips(nonfinite != 0, scale);
    stats.nonfinite_grad = nonfinite != 0 && !stats.skipped;
    collected_.push_back(stats);
    slot.pending = false;
    ++tail_;
  }
}

}  // namespace kiln::cuda
