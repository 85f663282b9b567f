// The batch loader: seeded per-epoch order, coverage, drop_last, resume in mid-epoch,
// augmentation draws, and prefetching that changes nothing but timing.
#include <algorithm>
#include <chrono>
#include <map>
#include <numeric>
#include <set>
#include <thread>

#include "data/loader.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

using detail::HostBatch;
using detail::Loader;
using detail::LoaderOptions;

constexpr std::int64_t kImageBytes = 3 * 32 * 32;

// Record i's image starts with i (16 bits, little-endian) and is otherwise a pattern of i,
// so a gathered image identifies its record and any mix-up of bytes shows.
Dataset numbered(std::int64_t n) {
  Dataset d;
  d.source = "numbered";
  d.images.resize(static_cast<std::size_t>(n * kImageBytes));
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint8_t* p = d.images.data() + i * kImageBytes;
    for (std::int64_t k = 0; k < kImageBytes; ++k) p[k] = static_cast<std::uint8_t>(i * 131 + k * 7);
    p[0] = static_cast<std::uint8_t>(i & 0xFF);
    p[1] = static_cast<std::uint8_t>(i >> 8);
    d.labels.push_back(static_cast<std::uint8_t>(i % 10));
  }
  return d;
}

// A batch copied out of the loader's buffers, as records rather than bytes.
struct Batch {
  std::vector<std::int64_t> records;
  std::vector<std::uint8_t> labels;
  std::vector<math::AugmentParams> augment;
  bool has_augment = false;

  bool operator==(const Batch& o) const {
    if (records != o.records || labels != o.labels || has_augment != o.has_augment) return false;
    for (std::size_t j = 0; j < augment.size(); ++j)
      if (augment[j].dy != o.augment[j].dy || augment[j].dx != o.augment[j].dx || augment[j].flip != o.augment[j].flip)
        return false;
    return true;
  }
};

Batch copy(const Dataset& data, const HostBatch& b) {
  Batch out;
  for (std::int64_t j = 0; j < b.n; ++j) {
    const std::uint8_t* img = b.images + j * kImageBytes;
    std::int64_t record = img[0] | (img[1] << 8);
    EXPECT_TRUE(std::equal(img, img + kImageBytes, data.image(record))) << "image " << j << " is not record " << record;
    out.records.push_back(record);
    out.labels.push_back(b.labels[j]);
    EXPECT_EQ(b.labels[j], data.labels[static_cast<std::size_t>(record)]) << "label of record " << record;
    if (b.augment) out.augment.push_back(b.augment[j]);
  }
  out.has_augment = b.augment != nullptr;
  return out;
}

std::vector<Batch> run_epoch(const Dataset& data, Loader& loader, std::int64_t epoch, std::int64_t first = 0) {
  loader.start_epoch(epoch, first);
  std::vector<Batch> batches;
  HostBatch b;
  while (loader.next(b)) batches.push_back(copy(data, b));
  EXPECT_FALSE(loader.next(b)) << "next() after the end of the epoch";
  return batches;
}

LoaderOptions options(std::int64_t batch, bool prefetch, std::uint64_t seed = 1) {
  LoaderOptions o;
  o.batch = batch;
  o.prefetch = prefetch;
  o.seed = seed;
  o.augment.enabled = true;
  return o;
}

bool is_permutation_of_iota(std::vector<std::int64_t> order) {
  std::sort(order.begin(), order.end());
  for (std::size_t i = 0; i < order.size(); ++i)
    if (order[i] != static_cast<std::int64_t>(i)) return false;
  return true;
}

TEST(Loader, EpochOrderIsASeededPermutation) {
  Dataset data = numbered(1000);
  Loader a(data, options(32, false, 1)), again(data, options(32, false, 1)), other(data, options(32, false, 2));
  std::vector<std::int64_t> e0 = a.epoch_order(0), e1 = a.epoch_order(1);
  EXPECT_TRUE(is_permutation_of_iota(e0));
  EXPECT_TRUE(is_permutation_of_iota(e1));
  EXPECT_NE(e0, e1);
  EXPECT_EQ(e0, again.epoch_order(0));
  EXPECT_NE(e0, other.epoch_order(0));
  std::vector<std::int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), std::int64_t{0});
  EXPECT_NE(e0, identity);
  // Shuffled well: few records keep their place.
  int fixed = 0;
  for (std::size_t i = 0; i < e0.size(); ++i) fixed += e0[i] == static_cast<std::int64_t>(i);
  EXPECT_LT(fixed, 10);
}

TEST(Loader, WithoutShuffleTheOrderIsFileOrder) {
  Dataset data = numbered(100);
  LoaderOptions o = options(30, false);
  o.shuffle = false;
  Loader loader(data, o);
  std::vector<std::int64_t> identity(100);
  std::iota(identity.begin(), identity.end(), std::int64_t{0});
  EXPECT_EQ(loader.epoch_order(0), identity);
  EXPECT_EQ(loader.epoch_order(5), identity);
  std::vector<std::int64_t> seen;
  for (const Batch& b : run_epoch(data, loader, 3)) seen.insert(seen.end(), b.records.begin(), b.records.end());
  EXPECT_EQ(seen, identity);
}

TEST(Loader, BatchesCoverEveryRecordOnceWithAShortLastBatch) {
  for (bool prefetch : {false, true}) {
    Dataset data = numbered(103);
    Loader loader(data, options(10, prefetch));
    EXPECT_EQ(loader.batches_per_epoch(), 11);
    std::vector<Batch> batches = run_epoch(data, loader, 2);
    ASSERT_EQ(batches.size(), 11u);
    std::vector<std::int64_t> seen;
    for (std::size_t k = 0; k < batches.size(); ++k) {
      EXPECT_EQ(batches[k].records.size(), k < 10 ? 10u : 3u) << "batch " << k;
      seen.insert(seen.end(), batches[k].records.begin(), batches[k].records.end());
    }
    EXPECT_EQ(seen, loader.epoch_order(2)) << "prefetch " << prefetch;
  }
}

TEST(Loader, DropLastDropsTheShortBatch) {
  Dataset data = numbered(103);
  LoaderOptions o = options(10, true);
  o.drop_last = true;
  Loader loader(data, o);
  EXPECT_EQ(loader.batches_per_epoch(), 10);
  std::vector<Batch> batches = run_epoch(data, loader, 0);
  ASSERT_EQ(batches.size(), 10u);
  std::vector<std::int64_t> seen;
  for (const Batch& b : batches) {
    EXPECT_EQ(b.records.size(), 10u);
    seen.insert(seen.end(), b.records.begin(), b.records.end());
  }
  std::vector<std::int64_t> order = loader.epoch_order(0);
  EXPECT_EQ(seen, std::vector<std::int64_t>(order.begin(), order.begin() + 100));
  EXPECT_EQ(std::set<std::int64_t>(seen.begin(), seen.end()).size(), 100u);
}

TEST(Loader, BatchLargerThanTheDataset) {
  Dataset data = numbered(5);
  Loader loader(data, options(8, true));
  EXPECT_EQ(loader.batches_per_epoch(), 1);
  std::vector<Batch> batches = run_epoch(data, loader, 0);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].records.size(), 5u);

  LoaderOptions o = options(8, true);
  o.drop_last = true;
  Loader dropping(data, o);
  EXPECT_EQ(dropping.batches_per_epoch(), 0);
  EXPECT_TRUE(run_epoch(data, dropping, 0).empty());
}

TEST(Loader, ResumeYieldsTheRestOfAnUninterruptedEpoch) {
  Dataset data = numbered(250);
  for (bool prefetch : {false, true}) {
    Loader full(data, options(16, prefetch, 9));
    std::vector<Batch> whole = run_epoch(data, full, 3);
    ASSERT_EQ(whole.size(), 16u);
    for (std::int64_t first : {0, 1, 7, 15, 16}) {
      // A fresh loader, as after a restart from a checkpoint.
      Loader resumed(data, options(16, prefetch, 9));
      std::vector<Batch> rest = run_epoch(data, resumed, 3, first);
      ASSERT_EQ(static_cast<std::int64_t>(rest.size()), 16 - first);
      for (std::size_t k = 0; k < rest.size(); ++k)
        EXPECT_TRUE(rest[k] == whole[static_cast<std::size_t>(first) + k])
            << "batch " << first + static_cast<std::int64_t>(k) << ", prefetch " << prefetch;
    }
    // The same loader, restarted in the middle of another epoch with a batch in flight.
    full.start_epoch(1);
    HostBatch b;
    ASSERT_TRUE(full.next(b));
    ASSERT_TRUE(full.next(b));
    std::vector<Batch> rest = run_epoch(data, full, 3, 5);
    ASSERT_EQ(rest.size(), 11u);
    for (std::size_t k = 0; k < rest.size(); ++k) EXPECT_TRUE(rest[k] == whole[5 + k]) << "batch " << 5 + k;
  }
}

TEST(Loader, PrefetchChangesNothing) {
  Dataset data = numbered(300);
  Loader sync(data, options(7, false, 4)), async(data, options(7, true, 4));
  for (std::int64_t epoch : {0, 1, 2}) {
    std::vector<Batch> a = run_epoch(data, sync, epoch), b = run_epoch(data, async, epoch);
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t k = 0; k < a.size(); ++k) EXPECT_TRUE(a[k] == b[k]) << "epoch " << epoch << " batch " << k;
  }
}

TEST(Loader, BatchStaysValidUntilTheNextCall) {
  // With prefetch the worker fills the other buffer meanwhile; the returned one must not change.
  Dataset data = numbered(64);
  Loader loader(data, options(4, true));
  loader.start_epoch(0);
  HostBatch b;
  while (loader.next(b)) {
    std::vector<std::uint8_t> before(b.images, b.images + b.n * kImageBytes);
    std::vector<std::uint8_t> labels(b.labels, b.labels + b.n);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_TRUE(std::equal(before.begin(), before.end(), b.images));
    EXPECT_TRUE(std::equal(labels.begin(), labels.end(), b.labels));
  }
}

TEST(Loader, ManyRestartsWithPrefetch) {
  Dataset data = numbered(40);
  Loader sync(data, options(1, false, 6)), async(data, options(1, true, 6));
  for (std::int64_t round = 0; round < 200; ++round) {
    std::int64_t epoch = round % 5, first = (round * 7) % 40;
    sync.start_epoch(epoch, first);
    async.start_epoch(epoch, first);
    HostBatch a, b;
    for (std::int64_t k = 0; k < round % 4; ++k) {
      bool more = sync.next(a);
      ASSERT_EQ(more, async.next(b));
      if (!more) break;
      EXPECT_TRUE(copy(data, a) == copy(data, b)) << "round " << round;
    }
  }
  // Destroyed with an epoch half consumed and the worker waiting on a full buffer.
}

TEST(Loader, AugmentDrawsCoverTheRangeAndFlipHalfTheTime) {
  Dataset data = numbered(4000);
  LoaderOptions o = options(100, true, 3);
  o.augment.max_shift = 4;
  Loader loader(data, o);
  std::map<int, int> dy, dx;
  int flips = 0, n = 0;
  std::vector<Batch> batches = run_epoch(data, loader, 0);
  for (std::size_t k = 0; k < batches.size(); ++k) {
    ASSERT_TRUE(batches[k].has_augment);
    for (std::size_t j = 0; j < batches[k].augment.size(); ++j) {
      math::AugmentParams a = batches[k].augment[j];
      math::AugmentParams expected = loader.augment_for(0, static_cast<std::int64_t>(k * 100 + j));
      EXPECT_EQ(a.dy, expected.dy);
      EXPECT_EQ(a.dx, expected.dx);
      EXPECT_EQ(a.flip, expected.flip);
      ++dy[a.dy];
      ++dx[a.dx];
      flips += a.flip;
      ++n;
    }
  }
  EXPECT_EQ(n, 4000);
  for (auto* hist : {&dy, &dx}) {
    EXPECT_EQ(hist->size(), 9u);
    EXPECT_EQ(hist->begin()->first, -4);
    EXPECT_EQ(hist->rbegin()->first, 4);
    for (auto [value, count] : *hist) EXPECT_NEAR(count, 4000 / 9, 100) << "shift " << value;
  }
  EXPECT_NEAR(flips / 4000.0, 0.5, 0.04);
  // Another epoch draws other parameters for the same positions.
  int same = 0;
  for (std::int64_t p = 0; p < 100; ++p) {
    math::AugmentParams a = loader.augment_for(0, p), b = loader.augment_for(1, p);
    same += a.dy == b.dy && a.dx == b.dx && a.flip == b.flip;
  }
  EXPECT_LT(same, 20);
}

TEST(Loader, AugmentOptionsAreHonoured) {
  Dataset data = numbered(500);
  LoaderOptions o = options(50, false);
  o.augment.flip = false;
  o.augment.max_shift = 2;
  Loader no_flip(data, o);
  std::set<int> shifts;
  for (std::int64_t p = 0; p < 500; ++p) {
    math::AugmentParams a = no_flip.augment_for(0, p);
    EXPECT_EQ(a.flip, 0);
    EXPECT_LE(std::abs(a.dy), 2);
    EXPECT_LE(std::abs(a.dx), 2);
    shifts.insert(a.dy);
  }
  EXPECT_EQ(shifts.size(), 5u);

  o.augment.flip = true;
  o.augment.max_shift = 0;
  Loader flip_only(data, o);
  int flips = 0;
  for (std::int64_t p = 0; p < 500; ++p) {
    math::AugmentParams a = flip_only.augment_for(0, p);
    EXPECT_EQ(a.dy, 0);
    EXPECT_EQ(a.dx, 0);
    flips += a.flip;
  }
  EXPECT_GT(flips, 180);
  EXPECT_LT(flips, 320);

  o.augment.enabled = false;
  o.augment.max_shift = 4;
  Loader plain(data, o);
  for (const Batch& b : run_epoch(data, plain, 0)) EXPECT_FALSE(b.has_augment);
  math::AugmentParams a = plain.augment_for(0, 3);
  EXPECT_EQ(a.dy, 0);
  EXPECT_EQ(a.dx, 0);
  EXPECT_EQ(a.flip, 0);
}

TEST(Loader, NothingBeforeTheFirstEpoch) {
  Dataset data = numbered(10);
  Loader loader(data, options(4, true));
  HostBatch b;
  EXPECT_FALSE(loader.next(b));
}

TEST(Loader, RejectsBadArguments) {
  Dataset data = numbered(10);
  EXPECT_THROW(Loader(data, options(0, true)), UsageError);
  LoaderOptions o = options(4, true);
  o.augment.max_shift = -1;
  EXPECT_THROW(Loader(data, o), UsageError);
  Loader loader(data, options(4, true));
  EXPECT_THROW(loader.start_epoch(0, 4), UsageError);  // 3 batches: 0..3 are valid starts
  EXPECT_THROW(loader.start_epoch(-1), UsageError);
  loader.start_epoch(0, 3);
  HostBatch b;
  EXPECT_FALSE(loader.next(b));
}

// The key a device keeps a resident copy under: the contents, not the object.
TEST(ContentKey, FollowsTheContentsNotTheObject) {
  const Dataset a = numbered(40);
  Dataset copy_of_a = a;
  const std::uint64_t key = detail::content_key(a);
  EXPECT_NE(key, 0u);
  EXPECT_EQ(detail::content_key(copy_of_a), key) << "equal contents in another object";
  copy_of_a.source = "renamed";
  EXPECT_EQ(detail::content_key(copy_of_a), key) << "the source is a name, not contents";

  // Any byte anywhere (the tail past the last whole 32-byte block included), any label,
  // the shape and the class count each change the key.
  for (std::size_t at : {std::size_t{0}, std::size_t{31}, a.images.size() / 2, a.images.size() - 1}) {
    Dataset d = a;
    d.images[at] ^= 1;
    EXPECT_NE(detail::content_key(d), key) << "image byte " << at;
  }
  Dataset label = a;
  label.labels[17] = static_cast<std::uint8_t>((label.labels[17] + 1) % 10);
  EXPECT_NE(detail::content_key(label), key);
  Dataset shape = a;
  shape.sample = Shape::chw(3, 64, 16);
  EXPECT_NE(detail::content_key(shape), key);
  Dataset classes = a;
  classes.classes = 100;
  EXPECT_NE(detail::content_key(classes), key);
  // Moving bytes between images and labels is another dataset.
  Dataset moved = a;
  moved.labels.push_back(moved.images.back());
  moved.images.pop_back();
  EXPECT_NE(detail::content_key(moved), key);
}

// Each batch carries the key it was given, for the device to gather from.
TEST(ContentKey, BatchesCarryTheResidentKey) {
  const Dataset data = numbered(10);
  LoaderOptions o;
  o.batch = 4;
  o.resident = 1234;
  Loader loader(data, o);
  loader.start_epoch(0);
  HostBatch b;
  int batches = 0;
  while (loader.next(b)) {
    EXPECT_EQ(b.resident, 1234u);
    ++batches;
  }
  EXPECT_EQ(batches, 3);
}

}  // namespace
}  // namespace kiln::test
