// load_idx on good and broken MNIST-layout directories, plain and gzip-compressed: every
// header field, the sizes, the labels and the gzip stream checked, every error naming the
// file and, where there is one, the record; and the real Fashion-MNIST when it is installed.
#include <array>
#include <fmt/format.h>

#include "data_test_util.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* kFiles[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                  "t10k-labels-idx1-ubyte"};

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

// `count` images whose pixels are a pattern of (split, i), under a header that says `count`.
std::string images(int split, std::uint32_t count, std::uint32_t rows = 28, std::uint32_t cols = 28) {
  std::string out = be32(0x803) + be32(count) + be32(rows) + be32(cols);
  for (std::uint32_t i = 0; i < count; ++i)
    for (int k = 0; k < 784; ++k) out += static_cast<char>(split * 31 + static_cast<int>(i) * 17 + k);
  return out;
}

std::string labels(int split, std::uint32_t count) {
  std::string out = be32(0x801) + be32(count);
  for (std::uint32_t i = 0; i < count; ++i) out += static_cast<char>((split * 3 + static_cast<int>(i)) % 10);
  return out;
}

// Four training images, three test images, each file plain or gzip-compressed.
void write_valid(const DataDir& dir, bool gz = false) {
  const std::string bytes[] = {images(0, 4), labels(0, 4), images(1, 3), labels(1, 3)};
  for (int f = 0; f < 4; ++f)
    write_bytes(dir.file(std::string(kFiles[f]) + (gz ? ".gz" : "")), gz ? gzip(bytes[f]) : bytes[f]);
}

DataError load_error(const DataDir& dir) {
  return data_error([&] { load_idx(dir.str(), DataFormat::mnist); });
}

void expect_valid(const Splits& d) {
  ASSERT_EQ(d.train.size(), 4);
  ASSERT_EQ(d.test.size(), 3);
  EXPECT_EQ(d.train.sample, Shape::chw(1, 28, 28));
  EXPECT_EQ(d.train.classes, 10);
  EXPECT_EQ(d.train.labels, (std::vector<std::uint8_t>{0, 1, 2, 3}));
  EXPECT_EQ(d.test.labels, (std::vector<std::uint8_t>{3, 4, 5}));
  EXPECT_EQ(std::string(d.train.images.begin(), d.train.images.end()), images(0, 4).substr(16));
  EXPECT_EQ(std::string(d.test.images.begin(), d.test.images.end()), images(1, 3).substr(16));
}

TEST(IdxReader, ReadsPlainFiles) {
  DataDir dir;
  write_valid(dir);
  Splits d = load_idx(dir.str(), DataFormat::mnist);
  expect_valid(d);
  EXPECT_EQ(d.format, DataFormat::mnist);
  EXPECT_EQ(d.train.source, dir.str());
  EXPECT_EQ(d.train.class_names, (std::vector<std::string>{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}));
}

TEST(IdxReader, ReadsGzipFiles) {
  DataDir dir;
  write_valid(dir, true);
  Splits d = load_idx(dir.str(), DataFormat::fashion_mnist);
  expect_valid(d);
  EXPECT_EQ(d.format, DataFormat::fashion_mnist);
  EXPECT_EQ(d.test.class_names.front(), "T-shirt/top");
  EXPECT_EQ(d.test.class_names.back(), "Ankle boot");
}

TEST(IdxReader, ReadsAMixAndPrefersThePlainFile) {
  DataDir dir;
  write_valid(dir, true);
  write_bytes(dir.file("t10k-images-idx3-ubyte"), images(1, 3));
  write_bytes(dir.file("train-labels-idx1-ubyte.gz"), "not gzip, and not read");
  write_bytes(dir.file("train-labels-idx1-ubyte"), labels(0, 4));
  expect_valid(load_idx(dir.str(), DataFormat::mnist));
}

TEST(IdxReader, ReadsConcatenatedGzipMembers) {
  DataDir dir;
  write_valid(dir, true);
  std::string whole = images(0, 4);
  write_bytes(dir.file("train-images-idx3-ubyte.gz"), gzip(whole.substr(0, 1000)) + gzip(whole.substr(1000)));
  expect_valid(load_idx(dir.str(), DataFormat::mnist));
}

TEST(IdxReader, AnEmptySplitIsWellFormed) {
  DataDir dir;
  write_valid(dir);
  write_bytes(dir.file("t10k-images-idx3-ubyte"), images(1, 0));
  write_bytes(dir.file("t10k-labels-idx1-ubyte"), labels(1, 0));
  EXPECT_EQ(load_idx(dir.str(), DataFormat::mnist).test.size(), 0);
}

TEST(IdxReader, WrongMagicNumber) {
  DataDir dir;
  write_valid(dir);
  std::string bytes = images(0, 4);
  bytes[3] = 0x02;
  write_bytes(dir.file("train-images-idx3-ubyte"), bytes);
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("train-images-idx3-ubyte"));
  EXPECT_EQ(e.exit_code(), ExitCode::invalid_input);
  EXPECT_TRUE(contains(e.what(), dir.file("train-images-idx3-ubyte") +
                                     ": magic number 0x00000802, expected 0x00000803 (unsigned bytes, 3 dimensions: IDX "
                                     "images)"))
      << e.what();
}

TEST(IdxReader, SwappedFilesAreNamedAsSuch) {
  DataDir dir;
  write_valid(dir);
  write_bytes(dir.file("t10k-labels-idx1-ubyte"), images(1, 3));
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("t10k-labels-idx1-ubyte"));
  EXPECT_TRUE(contains(e.what(), "magic number 0x00000803, expected 0x00000801")) << e.what();
  EXPECT_TRUE(contains(e.what(), "that is IDX images: are the file names swapped?")) << e.what();
}

TEST(IdxReader, GzipDataUnderAPlainName) {
  DataDir dir;
  write_valid(dir);
  write_bytes(dir.file("train-labels-idx1-ubyte"), gzip(labels(0, 4)));
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("train-labels-idx1-ubyte"));
  EXPECT_TRUE(contains(e.what(), "the file is gzip data: name it .gz")) << e.what();
}

TEST(IdxReader, TruncatedHeader) {
  DataDir dir;
  write_valid(dir);
  write_bytes(dir.file("t10k-images-idx3-ubyte"), images(1, 3).substr(0, 10));
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("t10k-images-idx3-ubyte"));
  EXPECT_EQ(e.record(), -1);
  EXPECT_TRUE(contains(e.what(), dir.file("t10k-images-idx3-ubyte") +
                                     ": 10 bytes is shorter than the 16-byte header of IDX images"))
      << e.what();
}

TEST(IdxReader, WrongImageSize) {
  DataDir dir;
  write_valid(dir);
  write_bytes(dir.file("train-images-idx3-ubyte"), images(0, 4, 32, 28));
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("train-images-idx3-ubyte"));
  EXPECT_TRUE(contains(e.what(), "the header says images of 32 rows x 28 columns; MNIST-layout images are 28 x 28"))
      << e.what();
}

TEST(IdxReader, TruncatedImageNamesTheRecord) {
  DataDir dir;
  write_valid(dir);
  write_bytes(dir.file("train-images-idx3-ubyte"), images(0, 4).substr(0, 16 + 2 * 784 + 100));
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("train-images-idx3-ubyte"));
  EXPECT_EQ(e.record(), 2);
  EXPECT_TRUE(contains(e.what(), "the header declares 4 images (3,152 bytes in all), but the file has 1,684 bytes: "
                                 "image 2 is truncated (100 of 784 bytes)"))
      << e.what();
}

TEST(IdxReader, HugeCountIsCheckedAgainstTheSizeBeforeAnyAllocation) {
  for (bool gz : {false, true}) {
    DataDir dir;
    write_valid(dir, gz);
    std::string bytes = images(0, 4);
    bytes.replace(4, 4, be32(0xFFFFFFFF));
    write_bytes(dir.file(std::string("train-images-idx3-ubyte") + (gz ? ".gz" : "")), gz ? gzip(bytes) : bytes);
    DataError e = load_error(dir);
    EXPECT_EQ(e.record(), 4);
    EXPECT_TRUE(contains(e.what(), "the header declares 4,294,967,295 images")) << e.what();
    EXPECT_TRUE(contains(e.what(), "it holds only 4 of them")) << e.what();
  }
}

TEST(IdxReader, TrailingBytesAreNamed) {
  for (bool gz : {false, true}) {
    DataDir dir;
    write_valid(dir, gz);
    const std::string path = dir.file(std::string("t10k-labels-idx1-ubyte") + (gz ? ".gz" : ""));
    write_bytes(path, gz ? gzip(labels(1, 3) + "xyz") : labels(1, 3) + "xyz");
    DataError e = load_error(dir);
    EXPECT_EQ(e.file(), path);
    EXPECT_TRUE(contains(e.what(), path + ": 3 trailing bytes after the 3 labels the header declares (14 bytes")) << e.what();
    EXPECT_EQ(gz, contains(e.what(), "(inflated)")) << e.what();
  }
}

TEST(IdxReader, CountsThatDisagreeNameBothFiles) {
  DataDir dir;
  write_valid(dir);
  write_bytes(dir.file("t10k-labels-idx1-ubyte"), labels(1, 2));
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("t10k-labels-idx1-ubyte"));
  EXPECT_TRUE(contains(e.what(), dir.file("t10k-labels-idx1-ubyte") + ": 2 labels, but " +
                                     dir.file("t10k-images-idx3-ubyte") + " has 3 images"))
      << e.what();
}

TEST(IdxReader, LabelOutOfRangeNamesTheRecord) {
  for (bool gz : {false, true}) {
    DataDir dir;
    write_valid(dir, gz);
    std::string bytes = labels(0, 4);
    bytes[8 + 3] = 10;
    const std::string path = dir.file(std::string("train-labels-idx1-ubyte") + (gz ? ".gz" : ""));
    write_bytes(path, gz ? gzip(bytes) : bytes);
    DataError e = load_error(dir);
    EXPECT_EQ(e.file(), path);
    EXPECT_EQ(e.record(), 3);
    EXPECT_TRUE(contains(e.what(), path + ": label 3 (byte offset 11")) << e.what();
    EXPECT_TRUE(contains(e.what(), "is 10; MNIST-layout labels are 0..9")) << e.what();
  }
}

TEST(IdxReader, CorruptGzip) {
  DataDir dir;
  write_valid(dir, true);
  std::string bytes = gzip(images(0, 4));
  for (std::size_t k = 20; k < 40; ++k) bytes[k] = static_cast<char>(bytes[k] ^ 0x5A);
  write_bytes(dir.file("train-images-idx3-ubyte.gz"), bytes);
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("train-images-idx3-ubyte.gz"));
  EXPECT_TRUE(contains(e.what(), dir.file("train-images-idx3-ubyte.gz") + ": corrupt gzip data")) << e.what();
}

TEST(IdxReader, GzipChecksumMismatch) {
  DataDir dir;
  write_valid(dir, true);
  std::string bytes = gzip(labels(0, 4));
  bytes[bytes.size() - 6] = static_cast<char>(bytes[bytes.size() - 6] ^ 1);  // the CRC-32 in the trailer
  write_bytes(dir.file("train-labels-idx1-ubyte.gz"), bytes);
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("train-labels-idx1-ubyte.gz"));
  EXPECT_TRUE(contains(e.what(), "corrupt gzip data")) << e.what();
  EXPECT_TRUE(contains(e.what(), "incorrect data check")) << e.what();
}

TEST(IdxReader, TruncatedGzip) {
  DataDir dir;
  write_valid(dir, true);
  std::string bytes = gzip(images(1, 3));
  write_bytes(dir.file("t10k-images-idx3-ubyte.gz"), bytes.substr(0, bytes.size() / 2));
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("t10k-images-idx3-ubyte.gz"));
  EXPECT_TRUE(contains(e.what(), "the gzip stream is cut short")) << e.what();
}

TEST(IdxReader, NotGzipUnderAGzName) {
  DataDir dir;
  write_valid(dir, true);
  write_bytes(dir.file("t10k-labels-idx1-ubyte.gz"), labels(1, 3));
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("t10k-labels-idx1-ubyte.gz"));
  EXPECT_TRUE(contains(e.what(), "is not gzip data")) << e.what();
}

TEST(IdxReader, GarbageAfterTheGzipStream) {
  DataDir dir;
  write_valid(dir, true);
  write_bytes(dir.file("t10k-labels-idx1-ubyte.gz"), gzip(labels(1, 3)) + "junk");
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("t10k-labels-idx1-ubyte.gz"));
  EXPECT_TRUE(contains(e.what(), "4 bytes after the end of the gzip stream")) << e.what();
}

TEST(IdxReader, EmptyFiles) {
  for (bool gz : {false, true}) {
    DataDir dir;
    write_valid(dir, gz);
    const std::string path = dir.file(std::string("train-labels-idx1-ubyte") + (gz ? ".gz" : ""));
    write_bytes(path, "");
    DataError e = load_error(dir);
    EXPECT_EQ(e.file(), path);
    EXPECT_EQ(e.record(), -1);
    EXPECT_TRUE(contains(e.what(), path + ": is empty (0 bytes)")) << e.what();
  }
}

TEST(IdxReader, EmptyGzipStream) {
  DataDir dir;
  write_valid(dir, true);
  write_bytes(dir.file("train-labels-idx1-ubyte.gz"), gzip(""));
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("train-labels-idx1-ubyte.gz"));
  EXPECT_TRUE(contains(e.what(), "is empty (0 bytes) (inflated)")) << e.what();
}

TEST(IdxReader, MissingFilesAreAllNamed) {
  DataDir dir;
  write_valid(dir);
  fs::remove(dir.file("train-labels-idx1-ubyte"));
  fs::remove(dir.file("t10k-images-idx3-ubyte"));
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.str());
  EXPECT_EQ(e.record(), -1);
  EXPECT_TRUE(contains(e.what(), "missing train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz]")) << e.what();
  EXPECT_TRUE(contains(e.what(), "tools/fetch-mnist.sh")) << e.what();
}

TEST(IdxReader, MissingDirectory) {
  DataDir dir;
  DataError e = data_error([&] { load_idx(dir.file("nowhere"), DataFormat::fashion_mnist); });
  EXPECT_EQ(e.file(), dir.file("nowhere"));
  EXPECT_TRUE(contains(e.what(), "Fashion-MNIST directory '" + dir.file("nowhere") + "' does not exist")) << e.what();
}

TEST(IdxReader, RefusesAFormatThatIsNotIdx) {
  DataDir dir;
  write_valid(dir);
  EXPECT_THROW(load_idx(dir.str(), DataFormat::cifar10), UsageError);
}

// The Debian package dataset-fashion-mnist: the four official .gz files.
TEST(IdxReader, RealFashionMnist) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << dir << " is not there (apt-get install dataset-fashion-mnist, or tools/fetch-fashion-mnist.sh)";
  Splits d = load_data(dir);
  EXPECT_EQ(d.format, DataFormat::fashion_mnist);  // detected: the directory's name says "fashion"
  ASSERT_EQ(d.train.size(), 60000);
  ASSERT_EQ(d.test.size(), 10000);
  EXPECT_EQ(d.train.images.size(), 60000u * 784u);
  std::array<int, 10> train{}, test{};
  for (std::uint8_t l : d.train.labels) ++train[l];
  for (std::uint8_t l : d.test.labels) ++test[l];
  for (int c = 0; c < 10; ++c) {
    EXPECT_EQ(train[static_cast<std::size_t>(c)], 6000) << "class " << c;
    EXPECT_EQ(test[static_cast<std::size_t>(c)], 1000) << "class " << c;
  }
  // The first training image is an ankle boot (label 9), its centre not blank.
  EXPECT_EQ(d.train.labels[0], 9);
  EXPECT_GT(d.train.image(0)[14 * 28 + 14], 0);
}

TEST(IdxReader, RealMnist) {
  const char* dir = std::getenv("KILN_MNIST_DIR");
  if (!dir || !*dir) GTEST_SKIP() << "set KILN_MNIST_DIR to an MNIST directory (tools/fetch-mnist.sh) to check the real set";
  Splits d = load_idx(dir, DataFormat::mnist);
  ASSERT_EQ(d.train.size(), 60000);
  ASSERT_EQ(d.test.size(), 10000);
  EXPECT_EQ(d.train.labels[0], 5);  // MNIST's first training digit
}

}  // namespace
}  // namespace kiln::test
