#pragma once

// The data pipeline on the device: a batch from the host (or gathered from a dataset kept
// in device memory) becomes the model's input, augmented and normalized, and its labels.
// Two slots alternate: the host fills one slot's pinned buffer and a copy stream moves it
// to the device while the compute stream still reads the other.
#include <array>
#include <cstdint>
#include <map>
#include <span>

#include "backend/executor.hpp"
#include "cuda/memory.hpp"
#include "math/layout.hpp"

namespace kiln::cuda {

class Staging {
 public:
  // For batches of up to `capacity` samples of `sample` (C, H, W); allocates nothing until
  // bind(), which runs once the plan is known to fit.
  Staging(std::int64_t capacity, const Shape& sample, detail::CudaOptions::Pipeline pipeline);
  // Waits for the copy stream (errors ignored) before the pinned buffers are freed.
  ~Staging();
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;

  // Device bytes of the staging region (both slots, the identity gather, the normalization
  // constants), and where it is: `region` in the plan's arena, 256-byte aligned. bind()
  // also allocates the pinned host buffers.
  static std::int64_t arena_bytes(std::int64_t capacity, const Shape& sample);
  void bind(std::byte* region, cudaStream_t stream);

  // Writes `batch` into `input` (the input activation in `dtype`, dims of batch.n samples) and its
  // labels into `labels`, on `stream`. The host waits only for the slot used two batches
  // ago, which is normally long done, and copies the normalization constants only when they
  // change.
  void stage(const detail::HostBatch& batch, const detail::InputTransform& transform, void* input, DType dtype,
             const math::Dims4& dims, std::int32_t* labels, cudaStream_t stream);
  // Copies `data` to device memory, on the compute stream (so the first gather is ordered
  // after it) through pinned bounce buffers, and returns its content key
  // (detail::content_key): the batches' HostBatch::resident. Copies are kept by key, so a
  // dataset with the same contents is not uploaded again, and another dataset, even at the
  // same address, never reads a stale copy. 0 when streaming (--pipeline stream, or it
  // does not fit in half of the free device memory under --pipeline auto).
  std::uint64_t make_resident(const Dataset& data);

 private:
  struct Slot {
    PinnedBuffer host;  // images, labels, indices, augment, packed
    std::byte* images = nullptr;
    std::byte* labels = nullptr;
    std::byte* indices = nullptr;
    std::byte* augment = nullptr;
    std::byte* device_images = nullptr;
    std::byte* device_labels = nullptr;
    std::byte* device_indices = nullptr;
    std::byte* device_augment = nullptr;
    Event copied, consumed;
  };
  struct Resident {
    DeviceBuffer images, labels;
  };
  bool transform_changed(const detail::InputTransform& t) const;
  void upload(std::byte* device, const std::uint8_t* host, std::size_t bytes);

  std::int64_t capacity_;
  Shape sample_;
  detail::CudaOptions::Pipeline pipeline_;
  Stream copy_stream_;  // first: outlives the events and buffers its copies use
  std::array<Slot, 2> slots_;
  int next_ = 0;
  std::int64_t* identity_ = nullptr;  // 0, 1, ... capacity - 1: the gather of a host batch
  float* mean_ = nullptr;
  float* inv_std_ = nullptr;
  PinnedBuffer transform_host_;       // mean, then inv_std: what the device copy reads
  bool transform_set_ = false;
  cudaStream_t stream_ = nullptr;  // the compute stream (bind)
  std::map<std::uint64_t, Resident> resident_;  // by content key
};

}  // namespace kiln::cuda
