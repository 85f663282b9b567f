#pragma once

// Batches from a Dataset: a per-epoch seeded shuffle, drop_last, and per-sample augmentation
// parameters, assembled ahead by a prefetch thread so a step never waits on the data.
// Everything is a pure function of (seed, epoch, position), so a run resumed in the middle
// of an epoch sees exactly the batches an uninterrupted run would, and the CUDA pipeline
// can reproduce the same crops and flips.
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/executor.hpp"
#include "kiln/data.hpp"
#include "math/augment.hpp"

namespace kiln::detail {

struct AugmentOptions {
  bool enabled = false;
  math::PadMode pad = math::PadMode::zero;  // zero: RandomCrop(padding); reflect: translate
  int max_shift = 4;                        // translations in [-max_shift, max_shift]
  bool flip = true;                         // random horizontal flip, probability 1/2
  bool alternate_flip = false;              // with flip: math::alternating_flip instead
};

struct LoaderOptions {
  std::int64_t batch = 128;
  bool shuffle = true;  // false: records in file order (data_batch_1 ... data_batch_5)
  bool drop_last = false;
  std::uint64_t seed = 0;
  AugmentOptions augment;
  bool prefetch = true;  // assemble the next batch on a background thread
  std::uint64_t resident = 0;  // HostBatch::resident of every batch: the data's device copy, if any
};

// A 64-bit key of a dataset's contents (sample shape, classes, images, labels): equal
// contents, equal keys; any changed byte, another key (but for a 2^-64 chance). Never 0.
// Reads every byte once, at memory speed (about 20 ms for CIFAR-10's training set).
std::uint64_t content_key(const Dataset& data);

class Loader {
 public:
  Loader(const Dataset& data, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  std::int64_t batches_per_epoch() const;
  // The order of the records in `epoch` (a permutation of 0..size-1, or identity).
  std::vector<std::int64_t> epoch_order(std::int64_t epoch) const;
  // The augmentation of the sample at `position` of `epoch`'s order.
  math::AugmentParams augment_for(std::int64_t epoch, std::int64_t position) const;
  // Starts `epoch` at batch `first` (for resuming).
  void start_epoch(std::int64_t epoch, std::int64_t first = 0);
  // The next batch of the epoch, or false at its end. Stays valid until the next call.
  bool next(HostBatch& batch);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::detail
