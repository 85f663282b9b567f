// The synthetic CIFAR-format set and write_cifar10: reproducible, balanced, learnable from
// shape rather than colour, and exact through a round trip on disk.
#include <array>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <numbers>
#include <set>
#include <unistd.h>

#include "test_util.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kImageBytes = 3 * 32 * 32;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "kiln-synth-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
};

Cifar10 synth(std::int64_t train, std::int64_t test, std::uint64_t seed) {
  SynthOptions o;
  o.train = train;
  o.test = test;
  o.seed = seed;
  return make_synthetic_cifar10(o);
}

std::vector<std::uint8_t> image_bytes(const Dataset& d, std::int64_t i) {
  return {d.image(i), d.image(i) + kImageBytes};
}

// FNV-1a of an image: equal images, equal fingerprints; a collision is vanishingly rare.
std::uint64_t fingerprint(const Dataset& d, std::int64_t i) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::int64_t k = 0; k < kImageBytes; ++k) h = (h ^ d.image(i)[k]) * 1099511628211ull;
  return h;
}

TEST(Synth, ShapeNamesAndLabelRange) {
  Cifar10 d = synth(50, 20, 1);
  for (const Dataset* split : {&d.train, &d.test}) {
    EXPECT_EQ(split->sample, Shape::chw(3, 32, 32));
    EXPECT_EQ(split->classes, 10);
    EXPECT_EQ(static_cast<std::int64_t>(split->images.size()), split->size() * kImageBytes);
    for (std::uint8_t label : split->labels) EXPECT_LT(label, 10);
    EXPECT_EQ(split->class_names,
              (std::vector<std::string>{"disc", "ring", "square", "hstripes", "vstripes", "dstripes", "plus", "triangle",
                                        "checker", "blob"}));
  }
  EXPECT_EQ(d.train.size(), 50);
  EXPECT_EQ(d.test.size(), 20);
}

TEST(Synth, SameSeedSameBytesOtherSeedOtherBytes) {
  Cifar10 a = synth(40, 20, 7), b = synth(40, 20, 7), c = synth(40, 20, 8);
  EXPECT_EQ(a.train.images, b.train.images);
  EXPECT_EQ(a.train.labels, b.train.labels);
  EXPECT_EQ(a.test.images, b.test.images);
  EXPECT_EQ(a.test.labels, b.test.labels);
  for (std::int64_t i = 0; i < 40; ++i) EXPECT_NE(image_bytes(a.train, i), image_bytes(c.train, i)) << "image " << i;
  EXPECT_NE(a.train.labels, c.train.labels);
}

TEST(Synth, ImageDependsOnlyOnSeedSplitAndIndex) {
  // A larger set extends a smaller one, so `kiln synth` with more images keeps the first ones.
  Cifar10 small = synth(23, 5, 3), large = synth(60, 12, 3);
  EXPECT_TRUE(std::equal(small.train.images.begin(), small.train.images.end(), large.train.images.begin()));
  EXPECT_TRUE(std::equal(small.train.labels.begin(), small.train.labels.end(), large.train.labels.begin()));
  EXPECT_TRUE(std::equal(small.test.images.begin(), small.test.images.end(), large.test.images.begin()));
}

TEST(Synth, TrainAndTestAreDisjointStreams) {
  Cifar10 d = synth(200, 200, 5);
  std::set<std::uint64_t> train;
  for (std::int64_t i = 0; i < d.train.size(); ++i) train.insert(fingerprint(d.train, i));
  EXPECT_EQ(static_cast<std::int64_t>(train.size()), d.train.size()) << "duplicate training images";
  for (std::int64_t i = 0; i < d.test.size(); ++i) EXPECT_EQ(train.count(fingerprint(d.test, i)), 0u) << "test image " << i;
  EXPECT_NE(d.train.labels, d.test.labels);
}

TEST(Synth, ClassesAreBalanced) {
  for (std::int64_t n : {1000, 1007}) {
    Cifar10 d = synth(n, 0, 11);
    std::array<int, 10> count{};
    for (std::uint8_t label : d.train.labels) ++count[label];
    for (int c = 0; c < 10; ++c) {
      EXPECT_GE(count[static_cast<std::size_t>(c)], n / 10) << "class " << c << " of " << n;
      EXPECT_LE(count[static_cast<std::size_t>(c)], n / 10 + 1) << "class " << c << " of " << n;
    }
  }
  // Not in a periodic order: the labels of consecutive blocks of ten differ.
  Cifar10 d = synth(100, 0, 11);
  EXPECT_FALSE(std::equal(d.train.labels.begin(), d.train.labels.begin() + 10, d.train.labels.begin() + 10));
}

// Shape features that ignore colour: a histogram of gradient orientations (8 bins over
// 0..180 degrees, weighted by magnitude) and the share of strong edges, from the grey image.
std::array<double, 9> shape_features(const std::uint8_t* image) {
  std::array<double, 9> f{};
  auto grey = [&](int y, int x) {
    y = std::clamp(y, 0, 31);
    x = std::clamp(x, 0, 31);
    return (image[y * 32 + x] + image[1024 + y * 32 + x] + image[2048 + y * 32 + x]) / 3.0;
  };
  double total = 0;
  int strong = 0;
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) {
      double gx = grey(y, x + 1) - grey(y, x - 1), gy = grey(y + 1, x) - grey(y - 1, x);
      double mag = std::hypot(gx, gy);
      double angle = std::atan2(gy, gx);
      if (angle < 0) angle += std::numbers::pi;
      int bin = std::min(7, static_cast<int>(angle / std::numbers::pi * 8));
      f[static_cast<std::size_t>(bin)] += mag;
      total += mag;
      strong += mag > 40;
    }
  for (int b = 0; b < 8; ++b) f[static_cast<std::size_t>(b)] /= total + 1e-9;
  f[8] = strong / 1024.0;
  return f;
}

std::array<double, 3> mean_colour(const std::uint8_t* image) {
  std::array<double, 3> f{};
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < 1024; ++i) f[static_cast<std::size_t>(c)] += image[c * 1024 + i];
    f[static_cast<std::size_t>(c)] /= 1024 * 255.0;
  }
  return f;
}

// Accuracy of a nearest-class-mean classifier fitted on `train`, scored on `test`.
template <std::size_t N, class Features>
double nearest_mean_accuracy(const Dataset& train, const Dataset& test, Features features) {
  std::array<std::array<double, N>, 10> mean{};
  std::array<int, 10> count{};
  for (std::int64_t i = 0; i < train.size(); ++i) {
    auto f = features(train.image(i));
    auto& m = mean[train.labels[static_cast<std::size_t>(i)]];
    for (std::size_t k = 0; k < N; ++k) m[k] += f[k];
    ++count[train.labels[static_cast<std::size_t>(i)]];
  }
  for (std::size_t c = 0; c < 10; ++c)
    for (double& v : mean[c]) v /= count[c];
  int correct = 0;
  for (std::int64_t i = 0; i < test.size(); ++i) {
    auto f = features(test.image(i));
    std::size_t best = 0;
    double best_d = 1e300;
    for (std::size_t c = 0; c < 10; ++c) {
      double d = 0;
      for (std::size_t k = 0; k < N; ++k) d += (f[k] - mean[c][k]) * (f[k] - mean[c][k]);
      if (d < best_d) best_d = d, best = c;
    }
    correct += best == test.labels[static_cast<std::size_t>(i)];
  }
  return static_cast<double>(correct) / static_cast<double>(test.size());
}

TEST(Synth, ClassesDifferInShapeNotColour) {
  Cifar10 d = synth(2000, 1000, 2);
  // Orientation and edge statistics alone tell classes apart well above chance (10%)...
  double shape = nearest_mean_accuracy<9>(d.train, d.test, shape_features);
  EXPECT_GT(shape, 0.25) << "classes are not distinguishable by shape statistics";
  // ...but the mean colour does not: colours are drawn alike for every class.
  double colour = nearest_mean_accuracy<3>(d.train, d.test, mean_colour);
  EXPECT_LT(colour, 0.2) << "the mean colour predicts the class";
  // And no class is one fixed picture: images of a class differ from their class mean a lot.
  std::vector<double> mean(static_cast<std::size_t>(kImageBytes));
  int n = 0;
  for (std::int64_t i = 0; i < d.train.size(); ++i) {
    if (d.train.labels[static_cast<std::size_t>(i)] != 0) continue;
    for (std::int64_t k = 0; k < kImageBytes; ++k) mean[static_cast<std::size_t>(k)] += d.train.image(i)[k];
    ++n;
  }
  double spread = 0;
  for (std::int64_t k = 0; k < kImageBytes; ++k) spread += std::abs(mean[static_cast<std::size_t>(k)] / n - 127.5);
  EXPECT_LT(spread / static_cast<double>(kImageBytes), 25.0) << "the mean disc image is far from uniform grey";
  std::printf("nearest class mean: shape features %.3f, mean colour %.3f\n", shape, colour);
}

TEST(Synth, WriteThenLoadIsExact) {
  TempDir tmp;
  Cifar10 d = synth(7, 3, 4);
  std::string dir = (tmp.path / "sub" / "set").string();  // parents are created
  write_cifar10(d, dir);
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                                          "data_batch_5.bin", "test_batch.bin", "batches.meta.txt"}))
      << "temporary files left behind";
  // 7 images over 5 files: 2, 2, 1, 1, 1.
  const std::int64_t per_file[] = {2, 2, 1, 1, 1};
  for (int k = 0; k < 5; ++k)
    EXPECT_EQ(static_cast<std::int64_t>(fs::file_size(fs::path(dir) / fmt::format("data_batch_{}.bin", k + 1))),
              per_file[k] * cifar10_record_bytes);
  EXPECT_EQ(static_cast<std::int64_t>(fs::file_size(fs::path(dir) / "test_batch.bin")), 3 * cifar10_record_bytes);

  Cifar10 back = load_cifar10(dir);
  EXPECT_EQ(back.train.images, d.train.images);
  EXPECT_EQ(back.train.labels, d.train.labels);
  EXPECT_EQ(back.test.images, d.test.images);
  EXPECT_EQ(back.test.labels, d.test.labels);
  EXPECT_EQ(back.train.class_names, d.train.class_names);
  EXPECT_EQ(back.test.class_names, d.test.class_names);
}

TEST(Synth, WriteReplacesAnExistingSet) {
  TempDir tmp;
  write_cifar10(synth(12, 4, 1), tmp.str());
  Cifar10 second = synth(10, 2, 2);
  write_cifar10(second, tmp.str());
  Cifar10 back = load_cifar10(tmp.str());
  EXPECT_EQ(back.train.images, second.train.images);
  EXPECT_EQ(back.test.labels, second.test.labels);
}

// Expects write_cifar10 to throw a DataError naming `file`, with `text` in its message.
void expect_write_error(const Cifar10& data, const std::string& dir, const std::string& file, const std::string& text,
                        std::int64_t record = -1) {
  try {
    write_cifar10(data, dir);
    ADD_FAILURE() << "expected a DataError naming " << file;
  } catch (const DataError& e) {
    EXPECT_EQ(e.file(), file);
    EXPECT_EQ(e.record(), record);
    EXPECT_TRUE(contains(e.what(), file)) << e.what();
    EXPECT_TRUE(contains(e.what(), text)) << e.what();
  }
}

TEST(Synth, WriteRefusesWhatTheReaderWouldReject) {
  TempDir tmp;
  std::string dir = tmp.str();
  // Fewer than five training images would leave a batch file empty.
  expect_write_error(synth(3, 2, 1), dir, dir + "/data_batch_4.bin", "would be empty");
  expect_write_error(synth(5, 0, 1), dir, dir + "/test_batch.bin", "would be empty");
  Cifar10 bad = synth(6, 2, 1);
  bad.train.labels[4] = 10;
  // Six images go 2, 1, 1, 1, 1 into the five files: image 4 is record 0 of data_batch_4.bin.
  expect_write_error(bad, dir, dir + "/data_batch_4.bin", "data_batch_4.bin: record 0 (train image 4) has label 10", 0);
  Cifar10 small = synth(6, 2, 1);
  small.test.sample = Shape::chw(1, 28, 28);
  expect_write_error(small, dir, dir + "/test_batch.bin", "1x28x28");
  EXPECT_TRUE(fs::is_empty(dir)) << "a refused write must not leave files";
}

TEST(Synth, WriteIntoAFileNamesIt) {
  TempDir tmp;
  std::string file = (tmp.path / "plain").string();
  std::ofstream(file) << "x";
  expect_write_error(synth(6, 2, 1), file, file, "cannot create the directory");
}

TEST(Synth, WriteIntoAReadOnlyDirectoryNamesTheFile) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root, which may write into a read-only directory";
  TempDir tmp;
  fs::permissions(tmp.path, fs::perms::owner_read | fs::perms::owner_exec);
  expect_write_error(synth(6, 2, 1), tmp.str(), tmp.str() + "/data_batch_1.bin", "temporary file");
  fs::permissions(tmp.path, fs::perms::owner_all);
}

}  // namespace
}  // namespace kiln::test
