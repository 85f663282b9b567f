// The batch loader. A batch is a pure function of (seed, epoch, batch index), computed
// either on the caller's thread or one batch ahead on a prefetch thread; the two paths
// share assemble(), so their output is identical by construction.
//
// Prefetch protocol: two slots. The consumer holds the slot it last returned until its
// next call to next() or start_epoch(); meanwhile the worker fills the other slot with the
// following batch. start_epoch() bumps a generation, waits for an assembly in flight to
// finish (its result is discarded), then resets the slots, so the worker never reads an
// order that is being replaced.
#include "data/loader.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <condition_variable>
#include <cstring>
#include <fmt/format.h>
#include <mutex>
#include <numeric>
#include <thread>

#include "kiln/error.hpp"
#include "math/rng.hpp"

namespace kiln::detail {

namespace {

struct Slot {
  enum class State { free, filling, ready, held };
  State state = State::free;
  std::int64_t batch = -1;
  std::int64_t n = 0;
  std::vector<std::uint8_t> images;
  std::vector<std::uint8_t> labels;
  std::vector<math::AugmentParams> augment;
};

}  // namespace

struct Loader::Impl {
  const Dataset& data;  // owned by the caller, which keeps it alive as long as the loader
  LoaderOptions options;
  std::int64_t sample_bytes = 0;
  std::int64_t batches = 0;

  // Set by start_epoch; read by the worker only while the generation is current.
  std::int64_t epoch = -1;
  std::uint64_t augment_key = 0;
  std::vector<std::int64_t> order;
  std::int64_t to_produce = 0;  // the next batch the worker assembles
  std::int64_t to_consume = 0;  // the next batch next() returns
  std::array<Slot, 2> slots;
  Slot* held = nullptr;

  std::mutex mutex;
  std::condition_variable changed;
  std::uint64_t generation = 0;
  bool busy = false;
  bool stopping = false;
  std::thread worker;

  Impl(const Dataset& d, LoaderOptions o) : data(d), options(o) {
    if (options.batch <= 0) throw UsageError(fmt::format("loader: batch size must be positive (got {})", options.batch));
    if (options.augment.max_shift < 0 || options.augment.max_shift > 32767)
      throw UsageError(fmt::format("loader: max_shift must be in 0..32767 (got {})", options.augment.max_shift));
    if (data.size() > std::int64_t{0xFFFFFFFF})
      throw UsageError(fmt::format("loader: {} records are more than the shuffle's 2^32 - 1", data.size()));
    sample_bytes = data.sample.elements();
    std::int64_t n = data.size();
    batches = options.drop_last ? n / options.batch : (n + options.batch - 1) / options.batch;
    std::int64_t capacity = std::min(options.batch, n);
    for (Slot& s : slots) {
      // Sized once, so the pointers handed out never move.
      s.images.resize(static_cast<std::size_t>(capacity * sample_bytes));
      s.labels.resize(static_cast<std::size_t>(capacity));
      if (options.augment.enabled) s.augment.resize(static_cast<std::size_t>(capacity));
    }
    if (options.prefetch) worker = std::thread([this] { run_worker(); });
  }

  ~Impl() {
    if (!worker.joinable()) return;
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    changed.notify_all();
    worker.join();
  }

  std::uint64_t key(std::uint64_t purpose, std::int64_t e) const {
    return math::stream_key(options.seed, purpose, static_cast<std::uint64_t>(e));
  }

  std::int64_t batch_size(std::int64_t b) const { return std::min(options.batch, data.size() - b * options.batch); }

  // Copies and draws only (no allocation), so the worker has nothing to throw.
  void assemble(Slot& slot, std::int64_t b) const noexcept {
    std::int64_t first = b * options.batch;
    slot.batch = b;
    slot.n = batch_size(b);
    for (std::int64_t j = 0; j < slot.n; ++j) {
      std::int64_t record = order[static_cast<std::size_t>(first + j)];
      std::memcpy(slot.images.data() + j * sample_bytes, data.image(record), static_cast<std::size_t>(sample_bytes));
      slot.labels[static_cast<std::size_t>(j)] = data.labels[static_cast<std::size_t>(record)];
      if (options.augment.enabled)
        slot.augment[static_cast<std::size_t>(j)] = draw(augment_key, epoch, first + j, record);
    }
  }

  void run_worker() {
    std::unique_lock lock(mutex);
    for (;;) {
      Slot* slot = nullptr;
      changed.wait(lock, [&] {
        if (stopping) return true;
        if (epoch < 0 || to_produce >= batches) return false;
        slot = &slots[static_cast<std::size_t>(to_produce % 2)];
        return slot->state == Slot::State::free;
      });
      if (stopping) return;
      std::int64_t b = to_produce++;
      std::uint64_t gen = generation;
      slot->state = Slot::State::filling;
      busy = true;
      lock.unlock();
      assemble(*slot, b);
      lock.lock();
      busy = false;
      slot->state = gen == generation ? Slot::State::ready : Slot::State::free;
      changed.notify_all();
    }
  }

  void start(std::int64_t e, std::int64_t first) {
    if (e < 0) throw UsageError(fmt::format("loader: epoch must not be negative (got {})", e));
    if (first < 0 || first > batches)
      throw UsageError(fmt::format("loader: cannot start epoch {} at batch {}: an epoch has {} batches", e, first, batches));
    std::vector<std::int64_t> new_order = epoch_order(e);
    std::unique_lock lock(mutex);
    ++generation;
    changed.wait(lock, [&] { return !busy; });
    epoch = e;
    augment_key = key(math::kStreamAugment, e);
    order = std::move(new_order);
    to_produce = to_consume = first;
    for (Slot& s : slots) s.state = Slot::State::free;
    held = nullptr;
    lock.unlock();
    changed.notify_all();
  }

  bool next(HostBatch& out) {
    Slot* slot = nullptr;
    if (options.prefetch) {
      std::unique_lock lock(mutex);
      if (held) held->state = Slot::State::free;
      held = nullptr;
      changed.notify_all();
      if (epoch < 0 || to_consume >= batches) return false;
      slot = &slots[static_cast<std::size_t>(to_consume % 2)];
      changed.wait(lock, [&] { return slot->state == Slot::State::ready && slot->batch == to_consume; });
      slot->state = Slot::State::held;
      held = slot;
    } else {
      if (epoch < 0 || to_consume >= batches) return false;
      slot = &slots[static_cast<std::size_t>(to_consume % 2)];
      assemble(*slot, to_consume);
    }
    ++to_consume;
    out.n = slot->n;
    out.images = slot->images.data();
    out.labels = slot->labels.data();
    out.augment = options.augment.enabled ? slot->augment.data() : nullptr;
    out.resident = options.resident;
    out.indices = order.data() + slot->batch * options.batch;
    return true;
  }

  math::AugmentParams draw(std::uint64_t k, std::int64_t e, std::int64_t position, std::int64_t record) const {
    const AugmentOptions& a = options.augment;
    math::AugmentParams p = math::draw_augment(k, static_cast<std::uint64_t>(position), a.max_shift, a.flip && !a.alternate_flip);
    if (a.flip && a.alternate_flip) p.flip = math::alternating_flip(key(math::kStreamAugment, 0xF1F), static_cast<std::uint64_t>(record), e);
    return p;
  }

  std::vector<std::int64_t> epoch_order(std::int64_t e) const {
    std::vector<std::int64_t> result(static_cast<std::size_t>(data.size()));
    std::iota(result.begin(), result.end(), std::int64_t{0});
    if (!options.shuffle) return result;
    // Fisher-Yates with the counter RNG: swap i's draw is a function of (seed, epoch, i).
    std::uint64_t k = key(math::kStreamShuffle, e);
    for (std::size_t i = result.size(); i > 1; --i) {
      std::uint32_t j = math::random_below(k, i - 1, static_cast<std::uint32_t>(i));
      std::swap(result[i - 1], result[j]);
    }
    return result;
  }
};

namespace {

// Four independent multiply-rotate lanes over 8-byte words (the loop vectorizes and keeps
// the multiplier busy), then a splitmix64 finish.
std::uint64_t hash_bytes(const std::uint8_t* p, std::size_t n, std::uint64_t seed) {
  constexpr std::uint64_t kMul = 0x9E3779B97F4A7C15ull;
  std::array<std::uint64_t, 4> lane{seed, seed ^ 0x243F6A8885A308D3ull, seed ^ 0x13198A2E03707344ull, seed ^ 0xA4093822299F31D0ull};
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (std::size_t l = 0; l < 4; ++l) {
      std::uint64_t w;
      std::memcpy(&w, p + i + 8 * l, 8);
      lane[l] = std::rotl(lane[l] ^ (w * kMul), 29) * kMul;
    }
  std::uint64_t h = n;
  for (; i < n; ++i) h = (h ^ p[i]) * 0x100000001B3ull;
  for (std::uint64_t l : lane) h = std::rotl(h ^ l, 27) * kMul;
  return math::mix64(h);
}

}  // namespace

std::uint64_t content_key(const Dataset& data) {
  std::uint64_t h = math::mix64(static_cast<std::uint64_t>(data.sample.c) << 40 ^ static_cast<std::uint64_t>(data.sample.h) << 20 ^
                                     static_cast<std::uint64_t>(data.sample.w) ^ static_cast<std::uint64_t>(data.classes) << 56);
  h = hash_bytes(data.images.data(), data.images.size(), h);
  h = hash_bytes(data.labels.data(), data.labels.size(), h);
  return h == 0 ? 1 : h;
}

Loader::Loader(const Dataset& data, LoaderOptions options) : impl_(std::make_unique<Impl>(data, options)) {}

Loader::~Loader() = default;

std::int64_t Loader::batches_per_epoch() const { return impl_->batches; }

std::vector<std::int64_t> Loader::epoch_order(std::int64_t epoch) const { return impl_->epoch_order(epoch); }

math::AugmentParams Loader::augment_for(std::int64_t epoch, std::int64_t position) const {
  if (!impl_->options.augment.enabled) return {};
  const std::int64_t record = impl_->epoch_order(epoch)[static_cast<std::size_t>(position)];
  return impl_->draw(impl_->key(math::kStreamAugment, epoch), epoch, position, record);
}

void Loader::start_epoch(std::int64_t epoch, std::int64_t first) { impl_->start(epoch, first); }

bool Loader::next(HostBatch& batch) { return impl_->next(batch); }

}  // namespace kiln::detail
