#include "cuda/staging.hpp"

#include <algorithm>
#include <cstring>
#include <fmt/format.h>
#include <vector>

#include "cuda/kernels.hpp"
#include "data/loader.hpp"
#include "kiln/error.hpp"
#include "kiln/format.hpp"
#include "trace/trace.hpp"
#include "util/checked.hpp"

namespace kiln::cuda {

namespace {

constexpr std::int64_t kAlign = 256;

// The parts of one slot, in bytes, in the order they are laid out (pinned and device alike).
struct SlotParts {
  std::int64_t images, labels, indices, augment;
  explicit SlotParts(std::int64_t capacity, const Shape& sample)
      : images(capacity * sample.elements()),
        labels(capacity),
        indices(capacity * 8),
        augment(capacity * static_cast<std::int64_t>(sizeof(math::AugmentParams))) {}
  std::int64_t aligned(std::int64_t bytes) const { return detail::align_up(bytes, kAlign); }
  std::int64_t total() const { return aligned(images) + aligned(labels) + aligned(indices) + aligned(augment); }
};

}  // namespace

Staging::Staging(std::int64_t capacity, const Shape& sample, detail::CudaOptions::Pipeline pipeline)
    : capacity_(capacity), sample_(sample), pipeline_(pipeline) {}

Staging::~Staging() {
  if (copy_stream_.get()) cudaStreamSynchronize(copy_stream_.get());
}

std::int64_t Staging::arena_bytes(std::int64_t capacity, const Shape& sample) {
  const SlotParts parts(capacity, sample);
  return 2 * parts.total() + parts.aligned(capacity * 8) + parts.aligned(2 * sample.c * 4);
}

void Staging::bind(std::byte* region, cudaStream_t stream) {
  const SlotParts parts(capacity_, sample_);
  stream_ = stream;
  transform_host_ = PinnedBuffer(static_cast<std::size_t>(2 * sample_.c * 4));
  std::byte* at = region;
  for (Slot& slot : slots_) {
    slot.host = PinnedBuffer(static_cast<std::size_t>(parts.total()));
    slot.images = slot.host.data();
    slot.labels = slot.images + parts.aligned(parts.images);
    slot.indices = slot.labels + parts.aligned(parts.labels);
    slot.augment = slot.indices + parts.aligned(parts.indices);
    slot.device_images = at;
    slot.device_labels = slot.device_images + parts.aligned(parts.images);
    slot.device_indices = slot.device_labels + parts.aligned(parts.labels);
    slot.device_augment = slot.device_indices + parts.aligned(parts.indices);
    at += parts.total();
  }
  identity_ = reinterpret_cast<std::int64_t*>(at);
  mean_ = reinterpret_cast<float*>(at + parts.aligned(capacity_ * 8));
  inv_std_ = mean_ + sample_.c;
  std::vector<std::int64_t> identity(static_cast<std::size_t>(capacity_));
  for (std::int64_t i = 0; i < capacity_; ++i) identity[static_cast<std::size_t>(i)] = i;
  // From pageable memory: returns once the source has been read, so `identity` may go.
  KILN_CUDA_CHECK(cudaMemcpyAsync(identity_, identity.data(), identity.size() * 8, cudaMemcpyHostToDevice, stream));
}

bool Staging::transform_changed(const detail::InputTransform& t) const {
  if (!transform_set_) return true;
  const auto* host = reinterpret_cast<const float*>(transform_host_.data());
  const std::size_t c = static_cast<std::size_t>(sample_.c);
  return !std::equal(t.mean.begin(), t.mean.end(), host, host + c) ||
         !std::equal(t.inv_std.begin(), t.inv_std.end(), host + c, host + 2 * c);
}

void Staging::stage(const detail::HostBatch& batch, const detail::InputTransform& t, void* input, DType dtype,
                    const math::Dims4& dims, std::int32_t* labels, cudaStream_t stream) {
  trace::Range range("data/stage");
  const std::int64_t n = batch.n;
  const std::int64_t plane = sample_.elements();
  const std::size_t channels = static_cast<std::size_t>(sample_.c);

  // Normalization constants change rarely: upload only when they do.
  if (transform_changed(t)) {
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream));  // the pinned copy may still be read
    auto* host = reinterpret_cast<float*>(transform_host_.data());
    std::copy(t.mean.begin(), t.mean.end(), host);
    std::copy(t.inv_std.begin(), t.inv_std.end(), host + channels);
    KILN_CUDA_CHECK(cudaMemcpyAsync(mean_, host, 2 * channels * 4, cudaMemcpyHostToDevice, stream));
    transform_set_ = true;
  }

  Slot& slot = slots_[static_cast<std::size_t>(next_)];
  next_ ^= 1;
  // The pinned slot was last read by a copy issued two batches ago: normally long done.
  KILN_CUDA_CHECK(cudaEventSynchronize(slot.copied.get()));
  auto resident = batch.resident ? resident_.find(batch.resident) : resident_.end();
  const bool gather = resident != resident_.end() && batch.indices;
  const std::size_t aug_bytes = static_cast<std::size_t>(n) * sizeof(math::AugmentParams);
  if (batch.augment) std::memcpy(slot.augment, batch.augment, aug_bytes);
  // The device slot may still be read by the staging kernel of two batches ago.
  cudaStream_t copy = copy_stream_.get();
  KILN_CUDA_CHECK(cudaStreamWaitEvent(copy, slot.consumed.get(), 0));
  if (gather) {
    std::memcpy(slot.indices, batch.indices, static_cast<std::size_t>(n) * 8);
    KILN_CUDA_CHECK(cudaMemcpyAsync(slot.device_indices, slot.indices, static_cast<std::size_t>(n) * 8, cudaMemcpyHostToDevice, copy));
  } else {
    std::memcpy(slot.images, batch.images, static_cast<std::size_t>(n * plane));
    std::memcpy(slot.labels, batch.labels, static_cast<std::size_t>(n));
    KILN_CUDA_CHECK(
        cudaMemcpyAsync(slot.device_images, slot.images, static_cast<std::size_t>(n * plane), cudaMemcpyHostToDevice, copy));
    KILN_CUDA_CHECK(cudaMemcpyAsync(slot.device_labels, slot.labels, static_cast<std::size_t>(n), cudaMemcpyHostToDevice, copy));
  }
  if (batch.augment) KILN_CUDA_CHECK(cudaMemcpyAsync(slot.device_augment, slot.augment, aug_bytes, cudaMemcpyHostToDevice, copy));
  KILN_CUDA_CHECK(cudaEventRecord(slot.copied.get(), copy));
  KILN_CUDA_CHECK(cudaStreamWaitEvent(stream, slot.copied.get(), 0));

  const auto* images = reinterpret_cast<const std::uint8_t*>(gather ? resident->second.images.data() : slot.device_images);
  const auto* labels_u8 = reinterpret_cast<const std::uint8_t*>(gather ? resident->second.labels.data() : slot.device_labels);
  const auto* indices = gather ? reinterpret_cast<const std::int64_t*>(slot.device_indices) : identity_;
  const auto* augment = batch.augment ? reinterpret_cast<const math::AugmentParams*>(slot.device_augment) : nullptr;
  stage_batch(dtype, images, indices, augment, t.pad, mean_, inv_std_, input, dims, stream);
  gather_labels(labels_u8, indices, n, labels, stream);
  KILN_CUDA_CHECK(cudaEventRecord(slot.consumed.get(), stream));
}

std::uint64_t Staging::make_resident(const Dataset& data) {
  if (pipeline_ == detail::CudaOptions::Pipeline::stream) return 0;
  const std::uint64_t key = detail::content_key(data);
  if (resident_.count(key)) return key;
  std::size_t free_bytes = 0, total_bytes = 0;
  KILN_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const std::size_t bytes = data.images.size() + data.labels.size();
  // Leave most of the device to training; streaming is the fallback.
  if (bytes > free_bytes / 2) {
    if (pipeline_ == detail::CudaOptions::Pipeline::resident)
      throw DeviceError(fmt::format("--pipeline resident: the dataset ({}) does not fit in half of the free device memory ({})",
                                    format_bytes(static_cast<std::int64_t>(bytes)),
                                    format_bytes(static_cast<std::int64_t>(free_bytes))));
    return 0;
  }
  trace::Range range("data/resident");
  Resident r{DeviceBuffer(data.images.size()), DeviceBuffer(data.labels.size())};
  upload(r.images.data(), data.images.data(), data.images.size());
  upload(r.labels.data(), data.labels.data(), data.labels.size());
  resident_.emplace(key, std::move(r));
  return key;
}

void Staging::upload(std::byte* device, const std::uint8_t* host, std::size_t bytes) {
  // Two pinned chunks in turn: the host fills one while the other's copy runs. On the
  // compute stream, so every kernel queued after this reads the finished copy.
  constexpr std::size_t kChunk = std::size_t{8} << 20;
  const std::size_t chunk = std::min(kChunk, bytes);
  if (chunk == 0) return;
  std::array<PinnedBuffer, 2> bounce{PinnedBuffer(chunk), PinnedBuffer(chunk)};
  std::array<Event, 2> copied;
  for (std::size_t at = 0, i = 0; at < bytes; at += chunk, ++i) {
    const std::size_t n = std::min(chunk, bytes - at);
    PinnedBuffer& b = bounce[i % 2];
    if (i >= 2) KILN_CUDA_CHECK(cudaEventSynchronize(copied[i % 2].get()));  // its last copy has read it
    std::memcpy(b.data(), host + at, n);
    KILN_CUDA_CHECK(cudaMemcpyAsync(device + at, b.data(), n, cudaMemcpyHostToDevice, stream_));
    KILN_CUDA_CHECK(cudaEventRecord(copied[i % 2].get(), stream_));
  }
  // The bounce buffers are freed on return: wait for the copies that read them.
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace kiln::cuda
