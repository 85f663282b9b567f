// load_cifar100 on good and broken directories: either label, the optional name files, and
// every error naming the file and, where there is one, the record.
#include <array>
#include <fmt/format.h>

#include "data_test_util.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

// `records` records whose labels are (coarse (file * 3 + r) % 20, fine (file * 7 + r) % 100)
// and whose pixels are a pattern of (file, r), so every byte of the result can be predicted.
std::string records(int file, int count) {
  std::string out;
  for (int r = 0; r < count; ++r) {
    out += static_cast<char>((file * 3 + r) % 20);
    out += static_cast<char>((file * 7 + r) % 100);
    for (int k = 0; k < 3072; ++k) out += static_cast<char>(file * 31 + r * 17 + k);
  }
  return out;
}

// Three training records, two test records.
void write_valid(const DataDir& dir) {
  write_bytes(dir.file("train.bin"), records(0, 3));
  write_bytes(dir.file("test.bin"), records(1, 2));
}

DataError load_error(const DataDir& dir) {
  return data_error([&] { load_cifar100(dir.str()); });
}

TEST(Cifar100Reader, ReadsTheFineLabels) {
  DataDir dir;
  write_valid(dir);
  write_bytes(dir.file("fine_label_names.txt"), "apple\r\naquarium_fish \n\nbaby\n");
  Splits d = load_cifar100(dir.str());
  EXPECT_EQ(d.format, DataFormat::cifar100);
  ASSERT_EQ(d.train.size(), 3);
  ASSERT_EQ(d.test.size(), 2);
  EXPECT_EQ(d.train.classes, 100);
  EXPECT_EQ(d.train.sample, Shape::chw(3, 32, 32));
  EXPECT_EQ(d.train.source, dir.str());
  EXPECT_EQ(d.train.labels, (std::vector<std::uint8_t>{0, 1, 2}));
  EXPECT_EQ(d.test.labels, (std::vector<std::uint8_t>{7, 8}));
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(d.train.image(r)), 3072),
              records(0, 3).substr(static_cast<std::size_t>(r * 3074 + 2), 3072))
        << "record " << r;
  EXPECT_EQ(d.train.class_names, (std::vector<std::string>{"apple", "aquarium_fish", "baby"}));
  EXPECT_EQ(d.test.class_names, d.train.class_names);
}

TEST(Cifar100Reader, ReadsTheCoarseLabels) {
  DataDir dir;
  write_valid(dir);
  write_bytes(dir.file("fine_label_names.txt"), "apple\n");
  write_bytes(dir.file("coarse_label_names.txt"), "aquatic_mammals\nfish\n");
  Splits d = load_cifar100(dir.str(), Cifar100Label::coarse);
  EXPECT_EQ(d.train.classes, 20);
  EXPECT_EQ(d.test.classes, 20);
  EXPECT_EQ(d.train.labels, (std::vector<std::uint8_t>{0, 1, 2}));
  EXPECT_EQ(d.test.labels, (std::vector<std::uint8_t>{3, 4}));
  EXPECT_EQ(d.train.class_names, (std::vector<std::string>{"aquatic_mammals", "fish"}));
}

TEST(Cifar100Reader, ClassNamesAreOptional) {
  DataDir dir;
  write_valid(dir);
  EXPECT_TRUE(load_cifar100(dir.str()).train.class_names.empty());
}

TEST(Cifar100Reader, TruncatedRecordNamesTheFileAndTheRecord) {
  DataDir dir;
  write_valid(dir);
  write_bytes(dir.file("train.bin"), records(0, 3).substr(0, 2 * 3074 + 100));
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("train.bin"));
  EXPECT_EQ(e.record(), 2);
  EXPECT_EQ(e.exit_code(), ExitCode::invalid_input);
  EXPECT_TRUE(contains(e.what(), dir.file("train.bin") + ": 6,248 bytes is not a whole number of 3,074-byte records"))
      << e.what();
  EXPECT_TRUE(contains(e.what(), "record 2 is truncated (100 of 3,074 bytes)")) << e.what();
}

TEST(Cifar100Reader, Cifar10BatchIsNotWholeRecords) {
  DataDir dir;
  write_valid(dir);
  write_bytes(dir.file("test.bin"), std::string(3073, '\0'));
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("test.bin"));
  EXPECT_EQ(e.record(), 0);
  EXPECT_TRUE(contains(e.what(), "record 0 is truncated (3,073 of 3,074 bytes)")) << e.what();
}

TEST(Cifar100Reader, EmptyFile) {
  DataDir dir;
  write_valid(dir);
  write_bytes(dir.file("test.bin"), "");
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("test.bin"));
  EXPECT_EQ(e.record(), -1);
  EXPECT_TRUE(contains(e.what(), dir.file("test.bin") + ": is empty (0 bytes)")) << e.what();
}

TEST(Cifar100Reader, CoarseLabelOutOfRange) {
  for (int label : {20, 255}) {
    DataDir dir;
    write_valid(dir);
    std::string bytes = records(1, 2);
    bytes[3074] = static_cast<char>(label);
    write_bytes(dir.file("test.bin"), bytes);
    DataError e = load_error(dir);
    EXPECT_EQ(e.file(), dir.file("test.bin"));
    EXPECT_EQ(e.record(), 1);
    EXPECT_TRUE(contains(e.what(), fmt::format("{}: record 1 (byte offset 3,074) has coarse label {}; CIFAR-100 coarse "
                                               "labels are 0..19",
                                               dir.file("test.bin"), label)))
        << e.what();
  }
}

TEST(Cifar100Reader, FineLabelOutOfRange) {
  // Checked whichever label is taken: a record is whole or the file is refused.
  for (Cifar100Label taken : {Cifar100Label::fine, Cifar100Label::coarse}) {
    DataDir dir;
    write_valid(dir);
    std::string bytes = records(0, 3);
    bytes[2 * 3074 + 1] = static_cast<char>(100);
    write_bytes(dir.file("train.bin"), bytes);
    DataError e = data_error([&] { load_cifar100(dir.str(), taken); });
    EXPECT_EQ(e.file(), dir.file("train.bin"));
    EXPECT_EQ(e.record(), 2);
    EXPECT_TRUE(contains(e.what(), dir.file("train.bin") +
                                       ": record 2 (byte offset 6,149) has fine label 100; CIFAR-100 fine labels are 0..99"))
        << e.what();
  }
}

TEST(Cifar100Reader, MissingFilesAreAllNamed) {
  DataDir dir;
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.str());
  EXPECT_EQ(e.record(), -1);
  EXPECT_TRUE(contains(e.what(), "missing train.bin, test.bin")) << e.what();
  EXPECT_TRUE(contains(e.what(), "tools/fetch-cifar100.sh")) << e.what();
}

TEST(Cifar100Reader, MissingDirectory) {
  DataDir dir;
  DataError e = data_error([&] { load_cifar100(dir.file("nowhere")); });
  EXPECT_EQ(e.file(), dir.file("nowhere"));
  EXPECT_TRUE(contains(e.what(), "CIFAR-100 directory '" + dir.file("nowhere") + "' does not exist")) << e.what();
}

TEST(Cifar100Reader, ADirectoryInsteadOfAFile) {
  DataDir dir;
  write_valid(dir);
  fs::remove(dir.file("train.bin"));
  fs::create_directory(dir.file("train.bin"));
  DataError e = load_error(dir);
  EXPECT_EQ(e.file(), dir.file("train.bin"));
  EXPECT_TRUE(contains(e.what(), "is a directory, not a CIFAR-100 binary file")) << e.what();
}

TEST(Cifar100Reader, RealCifar100) {
  const char* dir = std::getenv("KILN_CIFAR100_DIR");
  if (!dir || !*dir) GTEST_SKIP() << "set KILN_CIFAR100_DIR to a CIFAR-100 binary directory to check the real set";
  Splits d = load_cifar100(dir);
  ASSERT_EQ(d.train.size(), 50000);
  ASSERT_EQ(d.test.size(), 10000);
  std::array<int, 100> train{};
  for (std::uint8_t l : d.train.labels) ++train[l];
  for (int c = 0; c < 100; ++c) EXPECT_EQ(train[static_cast<std::size_t>(c)], 500) << "class " << c;
  Splits coarse = load_cifar100(dir, Cifar100Label::coarse);
  std::array<int, 20> superclass{};
  for (std::uint8_t l : coarse.test.labels) ++superclass[l];
  for (int c = 0; c < 20; ++c) EXPECT_EQ(superclass[static_cast<std::size_t>(c)], 500) << "superclass " << c;
}

}  // namespace
}  // namespace kiln::test
