// The dataset formats: names, detection from a directory's files, load_data's dispatch, the
// synthetic sets of every format (shape, balance, determinism, what makes a class) and their
// exact round trip through write_data and load_data.
#include <array>
#include <fmt/format.h>
#include <set>

#include "data_test_util.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

constexpr std::array<DataFormat, 4> kFormats = {DataFormat::cifar10, DataFormat::cifar100, DataFormat::mnist,
                                                DataFormat::fashion_mnist};

Splits synth(DataFormat format, std::int64_t train, std::int64_t test, std::uint64_t seed = 0) {
  SynthOptions o;
  o.train = train;
  o.test = test;
  o.seed = seed;
  o.format = format;
  return make_synthetic(o);
}

TEST(DataFormats, NamesRoundTrip) {
  EXPECT_STREQ(format_name(DataFormat::cifar10), "cifar10");
  EXPECT_STREQ(format_name(DataFormat::cifar100), "cifar100");
  EXPECT_STREQ(format_name(DataFormat::mnist), "mnist");
  EXPECT_STREQ(format_name(DataFormat::fashion_mnist), "fashion-mnist");
  for (DataFormat f : kFormats) {
    DataFormat parsed = DataFormat::cifar10;
    EXPECT_TRUE(parse_format(format_name(f), parsed));
    EXPECT_EQ(parsed, f);
  }
  DataFormat untouched = DataFormat::mnist;
  for (const char* bad : {"", "CIFAR10", "fashion_mnist", "cifar-100", "mnist "}) {
    EXPECT_FALSE(parse_format(bad, untouched)) << bad;
    EXPECT_EQ(untouched, DataFormat::mnist);
  }
}

TEST(DataFormats, DetectsEachFormatByItsFiles) {
  DataDir dir;
  fs::create_directories(dir.path / "c10");
  write_bytes(dir.file("c10/data_batch_1.bin"), "");
  fs::create_directories(dir.path / "c100");
  write_bytes(dir.file("c100/train.bin"), "");
  write_bytes(dir.file("c100/test.bin"), "");
  fs::create_directories(dir.path / "digits");
  write_bytes(dir.file("digits/train-images-idx3-ubyte.gz"), "");
  fs::create_directories(dir.path / "plain");
  write_bytes(dir.file("plain/train-images-idx3-ubyte"), "");
  fs::create_directories(dir.path / "My-Fashion_MNIST");
  write_bytes(dir.file("My-Fashion_MNIST/train-images-idx3-ubyte.gz"), "");
  EXPECT_EQ(detect_format(dir.file("c10")), DataFormat::cifar10);
  EXPECT_EQ(detect_format(dir.file("c100")), DataFormat::cifar100);
  EXPECT_EQ(detect_format(dir.file("digits")), DataFormat::mnist);
  EXPECT_EQ(detect_format(dir.file("plain")), DataFormat::mnist);
  EXPECT_EQ(detect_format(dir.file("My-Fashion_MNIST")), DataFormat::fashion_mnist);
  EXPECT_EQ(detect_format(dir.file("My-Fashion_MNIST") + "/"), DataFormat::fashion_mnist);
}

TEST(DataFormats, FashionIsReadFromTheLastComponentOnly) {
  DataDir dir("kiln-fashion");  // "fashion" higher up the path says nothing
  fs::create_directories(dir.path / "digits");
  write_bytes(dir.file("digits/train-images-idx3-ubyte"), "");
  EXPECT_EQ(detect_format(dir.file("digits")), DataFormat::mnist);
}

TEST(DataFormats, NothingToDetectListsWhatWasLookedForAndWhatIsThere) {
  DataDir dir;
  for (int k = 0; k < 12; ++k) write_bytes(dir.file(fmt::format("file{:02}.txt", k)), "");
  fs::create_directories(dir.path / "cifar-10-batches-bin");
  DataError e = data_error([&] { detect_format(dir.str()); });
  EXPECT_EQ(e.file(), dir.str());
  EXPECT_EQ(e.exit_code(), ExitCode::invalid_input);
  const std::string msg = e.what();
  EXPECT_TRUE(contains(msg, "cannot tell the dataset format of '" + dir.str() + "'")) << msg;
  EXPECT_TRUE(contains(msg, "data_batch_1.bin (CIFAR-10)")) << msg;
  EXPECT_TRUE(contains(msg, "train.bin and test.bin (CIFAR-100)")) << msg;
  EXPECT_TRUE(contains(msg, "train-images-idx3-ubyte[.gz] (MNIST")) << msg;
  EXPECT_TRUE(contains(msg, "found cifar-10-batches-bin/, file00.txt, file01.txt")) << msg;
  EXPECT_TRUE(contains(msg, "… (13 entries)")) << msg;
  EXPECT_FALSE(contains(msg, "file11.txt")) << msg;
}

TEST(DataFormats, NothingToDetectInAnEmptyOrMissingDirectory) {
  DataDir dir;
  EXPECT_TRUE(contains(data_error([&] { detect_format(dir.str()); }).what(), "found nothing (the directory is empty)"));
  DataError missing = data_error([&] { load_data(dir.file("nowhere")); });
  EXPECT_EQ(missing.file(), dir.file("nowhere"));
  EXPECT_TRUE(contains(missing.what(), "does not exist")) << missing.what();
}

TEST(DataFormats, LoadDataTakesTheFormatGiven) {
  DataDir dir;
  write_data(synth(DataFormat::mnist, 20, 10), dir.str());
  LoadOptions options;
  options.detect = false;
  options.format = DataFormat::fashion_mnist;
  Splits d = load_data(dir.str(), options);
  EXPECT_EQ(d.format, DataFormat::fashion_mnist);
  EXPECT_EQ(d.train.class_names.front(), "T-shirt/top");
  options.format = DataFormat::cifar10;  // the wrong format: that reader's own error
  DataError e = data_error([&] { load_data(dir.str(), options); });
  EXPECT_TRUE(contains(e.what(), "is not a CIFAR-10 binary directory")) << e.what();
}

TEST(DataFormats, SyntheticSetsHaveTheirFormatsShapeAndClasses) {
  for (DataFormat f : kFormats) {
    Splits d = synth(f, 230, 120, 3);
    const bool idx = f == DataFormat::mnist || f == DataFormat::fashion_mnist;
    const Shape sample = idx ? Shape::chw(1, 28, 28) : Shape::chw(3, 32, 32);
    const int classes = f == DataFormat::cifar100 ? 100 : 10;
    EXPECT_EQ(d.format, f);
    for (const Dataset* split : {&d.train, &d.test}) {
      EXPECT_EQ(split->sample, sample) << format_name(f);
      EXPECT_EQ(split->classes, classes) << format_name(f);
      EXPECT_EQ(split->class_names.size(), static_cast<std::size_t>(classes)) << format_name(f);
      EXPECT_EQ(static_cast<std::int64_t>(split->images.size()), split->size() * sample.elements());
      std::vector<int> counts(static_cast<std::size_t>(classes));
      for (std::uint8_t label : split->labels) ++counts.at(label);
      // Blocks of `classes` labels, each class once per block.
      const auto [lo, hi] = std::minmax_element(counts.begin(), counts.end());
      EXPECT_LE(*hi - *lo, 1) << format_name(f);
    }
    EXPECT_TRUE(contains(d.train.source, "synthetic")) << d.train.source;
  }
}

TEST(DataFormats, SyntheticSetsArePureFunctionsOfTheOptions) {
  for (DataFormat f : kFormats) {
    Splits a = synth(f, 40, 10, 7), b = synth(f, 40, 10, 7), c = synth(f, 40, 10, 8);
    EXPECT_EQ(a.train.images, b.train.images) << format_name(f);
    EXPECT_EQ(a.test.labels, b.test.labels) << format_name(f);
    EXPECT_NE(a.train.images, c.train.images) << format_name(f);
    // An image depends on its index, not on how many were asked for.
    Splits longer = synth(f, 80, 10, 7);
    EXPECT_TRUE(std::equal(a.train.images.begin(), a.train.images.end(), longer.train.images.begin())) << format_name(f);
  }
  // CIFAR-10's set is make_synthetic_cifar10's, byte for byte.
  SynthOptions o;
  o.train = 30;
  o.test = 10;
  EXPECT_EQ(make_synthetic(o).train.images, make_synthetic_cifar10(o).train.images);
}

TEST(DataFormats, SyntheticMnistIsGreyWithContrast) {
  Splits d = synth(DataFormat::mnist, 200, 0);
  int flat = 0;
  for (std::int64_t i = 0; i < d.train.size(); ++i) {
    auto [lo, hi] = std::minmax_element(d.train.image(i), d.train.image(i) + 784);
    if (*hi - *lo < 60) ++flat;
  }
  EXPECT_LE(flat, 4) << "images without a visible pattern";
}

// Synthetic CIFAR-100: the official superclass mapping groups five fine classes of one
// pattern family each, so coarse labels are learnable too; the fine class's hue is the
// foreground's.
TEST(DataFormats, SyntheticCifar100SuperclassesAreCoherent) {
  DataDir dir;
  Splits d = synth(DataFormat::cifar100, 300, 100);
  write_data(d, dir.str());
  LoadOptions options;
  options.label = Cifar100Label::coarse;
  Splits coarse = load_data(dir.str(), options);
  ASSERT_EQ(coarse.train.classes, 20);
  ASSERT_EQ(coarse.train.class_names.size(), 20u);
  std::array<std::set<int>, 20> fine_of{};
  for (std::int64_t i = 0; i < d.train.size(); ++i) {
    std::uint8_t fine = d.train.labels[static_cast<std::size_t>(i)], super = coarse.train.labels[static_cast<std::size_t>(i)];
    fine_of[super].insert(fine);
    // "disc-red" belongs to "disc-red-to-green".
    const std::string& fine_name = d.train.class_names[fine];
    const std::string& super_name = coarse.train.class_names[super];
    EXPECT_EQ(fine_name.substr(0, fine_name.find('-')), super_name.substr(0, super_name.find('-'))) << fine_name;
  }
  for (int s = 0; s < 20; ++s) EXPECT_EQ(fine_of[static_cast<std::size_t>(s)].size(), 5u) << "superclass " << s;
  std::set<std::string> names(d.train.class_names.begin(), d.train.class_names.end());
  EXPECT_EQ(names.size(), 100u);
}

TEST(DataFormats, WriteThenLoadIsExactForEveryFormat) {
  for (DataFormat f : kFormats) {
    DataDir dir;
    Splits written = synth(f, 55, 21, 5);
    write_data(written, dir.str());
    EXPECT_EQ(detect_format(dir.str()), f == DataFormat::fashion_mnist ? DataFormat::mnist : f)
        << "(the directory's name does not say fashion)";
    LoadOptions options;
    options.detect = false;
    options.format = f;
    Splits read = load_data(dir.str(), options);
    EXPECT_EQ(read.format, f);
    for (auto [w, r] : {std::pair{&written.train, &read.train}, std::pair{&written.test, &read.test}}) {
      EXPECT_EQ(r->images, w->images) << format_name(f);
      EXPECT_EQ(r->labels, w->labels) << format_name(f);
      EXPECT_EQ(r->sample, w->sample) << format_name(f);
      EXPECT_EQ(r->classes, w->classes) << format_name(f);
      EXPECT_EQ(r->class_names, w->class_names) << format_name(f);
      EXPECT_EQ(r->source, dir.str());
    }
  }
}

TEST(DataFormats, GzippedIdxReadsBackTheSame) {
  DataDir dir;
  Splits written = synth(DataFormat::mnist, 30, 12);
  write_data(written, dir.str());
  for (const char* name : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                           "t10k-labels-idx1-ubyte"}) {
    write_bytes(dir.file(std::string(name) + ".gz"), gzip(read_bytes(dir.file(name))));
    fs::remove(dir.file(name));
  }
  Splits read = load_data(dir.str());
  EXPECT_EQ(read.train.images, written.train.images);
  EXPECT_EQ(read.test.labels, written.test.labels);
}

TEST(DataFormats, WriteRefusesWhatTheReaderWouldReject) {
  DataDir dir;
  Splits cifar100 = synth(DataFormat::cifar100, 10, 5);
  cifar100.train.labels[3] = 100;
  DataError e = data_error([&] { write_data(cifar100, dir.file("c100")); });
  EXPECT_EQ(e.file(), dir.file("c100/train.bin"));
  EXPECT_EQ(e.record(), 3);
  EXPECT_FALSE(fs::exists(dir.file("c100"))) << "nothing is written";

  Splits coarse = synth(DataFormat::cifar100, 10, 5);
  coarse.test.classes = 20;
  EXPECT_TRUE(contains(data_error([&] { write_data(coarse, dir.file("c20")); }).what(), "needs the 100 fine labels"));

  Splits mnist = synth(DataFormat::mnist, 10, 5);
  mnist.test.labels[4] = 10;
  e = data_error([&] { write_data(mnist, dir.file("m")); });
  EXPECT_EQ(e.file(), dir.file("m/t10k-labels-idx1-ubyte"));
  EXPECT_EQ(e.record(), 4);

  Splits wrong_shape = synth(DataFormat::cifar10, 10, 5);
  wrong_shape.format = DataFormat::mnist;
  e = data_error([&] { write_data(wrong_shape, dir.file("w")); });
  EXPECT_TRUE(contains(e.what(), "hold 1x28x28 images")) << e.what();
  EXPECT_FALSE(fs::exists(dir.file("w")));
}

}  // namespace
}  // namespace kiln::test
