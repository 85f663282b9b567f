// load_cifar10 on good and broken directories: every error names the file and, where there
// is one, the record; and tools/fetch-cifar10.sh's offline, checksum and idempotent paths
// (without downloading anything).
#include <array>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

constexpr std::array<const char*, 6> kFiles = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                               "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "kiln-cifar-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, ec);
    fs::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// `records` records whose label is (file * 7 + r) % 10 and whose pixels are a pattern of
// (file, r), so every byte of the result can be predicted.
std::string batch_bytes(int file, int records) {
  std::string out;
  for (int r = 0; r < records; ++r) {
    out += static_cast<char>((file * 7 + r) % 10);
    for (int k = 0; k < 3072; ++k) out += static_cast<char>(file * 31 + r * 17 + k);
  }
  return out;
}

void write(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

// A valid directory: two records in each training file, three in the test file.
void write_valid(const TempDir& dir) {
  for (int f = 0; f < 6; ++f) write(dir.file(kFiles[static_cast<std::size_t>(f)]), batch_bytes(f, f == 5 ? 3 : 2));
}

DataError load_error(const std::string& dir) {
  try {
    load_cifar10(dir);
  } catch (const DataError& e) {
    return e;
  }
  ADD_FAILURE() << "expected a DataError for " << dir;
  return DataError("", -2, "");
}

TEST(Cifar10Reader, ReadsAValidDirectory) {
  TempDir dir;
  write_valid(dir);
  write(dir.file("batches.meta.txt"), "airplane\r\nautomobile \n\nbird\n");
  Cifar10 d = load_cifar10(dir.str());
  ASSERT_EQ(d.train.size(), 10);
  ASSERT_EQ(d.test.size(), 3);
  EXPECT_EQ(d.train.sample, Shape::chw(3, 32, 32));
  EXPECT_EQ(d.train.source, dir.str());
  for (int f = 0; f < 5; ++f)
    for (int r = 0; r < 2; ++r) {
      std::string expected = batch_bytes(f, 2).substr(static_cast<std::size_t>(r * 3073), 3073);
      std::int64_t i = f * 2 + r;
      EXPECT_EQ(d.train.labels[static_cast<std::size_t>(i)], (f * 7 + r) % 10);
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(d.train.image(i)), 3072), expected.substr(1)) << "record " << i;
    }
  EXPECT_EQ(d.test.labels, (std::vector<std::uint8_t>{5, 6, 7}));
  EXPECT_EQ(d.train.class_names, (std::vector<std::string>{"airplane", "automobile", "bird"}));
  EXPECT_EQ(d.test.class_names, d.train.class_names);
}

TEST(Cifar10Reader, ClassNamesAreOptional) {
  TempDir dir;
  write_valid(dir);
  EXPECT_TRUE(load_cifar10(dir.str()).train.class_names.empty());
}

TEST(Cifar10Reader, TruncatedFileNamesTheFileAndTheRecord) {
  TempDir dir;
  write_valid(dir);
  write(dir.file("data_batch_3.bin"), batch_bytes(2, 3).substr(0, 2 * 3073 + 100));
  DataError e = load_error(dir.str());
  EXPECT_EQ(e.file(), dir.file("data_batch_3.bin"));
  EXPECT_EQ(e.record(), 2);
  EXPECT_EQ(e.exit_code(), ExitCode::invalid_input);
  std::string msg = e.what();
  EXPECT_TRUE(contains(msg, dir.file("data_batch_3.bin") + ": 6,246 bytes is not a whole number of 3,073-byte records"))
      << msg;
  EXPECT_TRUE(contains(msg, "record 2 is truncated (100 of 3,073 bytes)")) << msg;
}

TEST(Cifar10Reader, EmptyFile) {
  TempDir dir;
  write_valid(dir);
  write(dir.file("test_batch.bin"), "");
  DataError e = load_error(dir.str());
  EXPECT_EQ(e.file(), dir.file("test_batch.bin"));
  EXPECT_EQ(e.record(), -1);
  EXPECT_TRUE(contains(e.what(), dir.file("test_batch.bin") + ": is empty (0 bytes)")) << e.what();
}

TEST(Cifar10Reader, BadLabelNamesTheFileAndTheRecord) {
  for (int label : {10, 255}) {
    TempDir dir;
    write_valid(dir);
    std::string bytes = batch_bytes(1, 2);
    bytes[3073] = static_cast<char>(label);
    write(dir.file("data_batch_2.bin"), bytes);
    DataError e = load_error(dir.str());
    EXPECT_EQ(e.file(), dir.file("data_batch_2.bin"));
    EXPECT_EQ(e.record(), 1);
    EXPECT_TRUE(contains(e.what(), fmt::format("{}: record 1 (byte offset 3,073) has label {}; CIFAR-10 labels are 0..9",
                                               dir.file("data_batch_2.bin"), label)))
        << e.what();
  }
}

TEST(Cifar10Reader, MissingFilesAreAllNamed) {
  TempDir dir;
  write_valid(dir);
  fs::remove(dir.file("data_batch_4.bin"));
  fs::remove(dir.file("test_batch.bin"));
  DataError e = load_error(dir.str());
  EXPECT_EQ(e.file(), dir.str());
  EXPECT_EQ(e.record(), -1);
  EXPECT_TRUE(contains(e.what(), "missing data_batch_4.bin, test_batch.bin")) << e.what();
  EXPECT_TRUE(contains(e.what(), "tools/fetch-cifar10.sh")) << e.what();
}

TEST(Cifar10Reader, MissingDirectory) {
  TempDir dir;
  DataError e = load_error(dir.file("nowhere"));
  EXPECT_EQ(e.file(), dir.file("nowhere"));
  EXPECT_TRUE(contains(e.what(), "CIFAR-10 directory '" + dir.file("nowhere") + "' does not exist")) << e.what();
  EXPECT_TRUE(contains(e.what(), "kiln synth")) << e.what();
}

TEST(Cifar10Reader, AFileInsteadOfADirectory) {
  TempDir dir;
  write_valid(dir);
  DataError e = load_error(dir.file("data_batch_1.bin"));
  EXPECT_EQ(e.file(), dir.file("data_batch_1.bin"));
  EXPECT_TRUE(contains(e.what(), "'" + dir.file("data_batch_1.bin") + "' is not a directory")) << e.what();
}

TEST(Cifar10Reader, ADirectoryInsteadOfABatchFile) {
  TempDir dir;
  write_valid(dir);
  fs::remove(dir.file("data_batch_5.bin"));
  fs::create_directory(dir.file("data_batch_5.bin"));
  DataError e = load_error(dir.str());
  EXPECT_EQ(e.file(), dir.file("data_batch_5.bin"));
  EXPECT_TRUE(contains(e.what(), "is a directory, not a CIFAR-10 batch file")) << e.what();
}

TEST(Cifar10Reader, UnreadableFile) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root, which reads a file whatever its mode";
  TempDir dir;
  write_valid(dir);
  fs::permissions(dir.file("data_batch_1.bin"), fs::perms::none);
  DataError e = load_error(dir.str());
  EXPECT_EQ(e.file(), dir.file("data_batch_1.bin"));
  EXPECT_TRUE(contains(e.what(), dir.file("data_batch_1.bin") + ": cannot read: Permission denied")) << e.what();
}

TEST(Cifar10Reader, RealCifar10) {
  const char* dir = std::getenv("KILN_CIFAR10_DIR");
  if (!dir || !*dir) GTEST_SKIP() << "set KILN_CIFAR10_DIR to a CIFAR-10 binary directory to check the real set";
  Cifar10 d = load_cifar10(dir);
  ASSERT_EQ(d.train.size(), 50000);
  ASSERT_EQ(d.test.size(), 10000);
  EXPECT_EQ(d.train.images.size(), 50000u * 3072u);
  EXPECT_EQ(d.train.class_names, (std::vector<std::string>{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                           "horse", "ship", "truck"}));
  std::array<int, 10> train{}, test{};
  for (std::uint8_t l : d.train.labels) ++train[l];
  for (std::uint8_t l : d.test.labels) ++test[l];
  for (int c = 0; c < 10; ++c) {
    EXPECT_EQ(train[static_cast<std::size_t>(c)], 5000) << "class " << c;
    EXPECT_EQ(test[static_cast<std::size_t>(c)], 1000) << "class " << c;
  }
}

// ---- tools/fetch-cifar10.sh, with the download pointed at local files ------------------

struct FetchResult {
  int code = -1;
  std::string output;
};

FetchResult fetch(const std::string& env, const std::string& args, const TempDir& tmp) {
  std::string log = tmp.file("fetch.log");
  std::string cmd = fmt::format("{} bash '{}' {} >'{}' 2>&1", env, repo_path("tools/fetch-cifar10.sh"), args, log);
  int status = std::system(cmd.c_str());
  FetchResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(log);
  r.output.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return r;
}

TEST(FetchCifar10, SkipsWhenTheFilesArePresent) {
  TempDir tmp;
  fs::create_directory(tmp.file("set"));
  // Full-size (sparse) files are what the script checks for.
  for (const char* f : kFiles) {
    write(tmp.file(std::string("set/") + f), "");
    fs::resize_file(tmp.file(std::string("set/") + f), 30730000);
  }
  FetchResult r = fetch("KILN_CIFAR10_URL=http://127.0.0.1:9/never", "--out " + tmp.file("set"), tmp);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "CIFAR-10 is already in " + tmp.file("set"))) << r.output;
}

TEST(FetchCifar10, OfflineFailsClearly) {
  TempDir tmp;
  FetchResult r = fetch("KILN_CIFAR10_URL=http://127.0.0.1:9/cifar-10-binary.tar.gz", "--out " + tmp.file("set"), tmp);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "fetch-cifar10: error: could not download http://127.0.0.1:9/cifar-10-binary.tar.gz"))
      << r.output;
  EXPECT_FALSE(fs::exists(tmp.file("set")));
}

TEST(FetchCifar10, ChecksumMismatchFailsAndWritesNothing) {
  // wget cannot read file:// URLs.
  if (std::system("command -v curl >/dev/null 2>&1") != 0) GTEST_SKIP() << "curl is not installed";
  TempDir tmp;
  write(tmp.file("fake.tar.gz"), "not the CIFAR-10 archive");
  FetchResult r = fetch("KILN_CIFAR10_URL=file://" + tmp.file("fake.tar.gz"), "--out " + tmp.file("set"), tmp);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "checksum mismatch")) << r.output;
  EXPECT_TRUE(contains(r.output, "expected c32a1d4ab5d03f1284b67883e8d87530")) << r.output;
  EXPECT_FALSE(fs::exists(tmp.file("set")));
  for (const auto& e : fs::directory_iterator(tmp.path))
    EXPECT_FALSE(contains(e.path().filename().string(), ".fetch-cifar10")) << "temporary directory left behind";
}

TEST(FetchCifar10, UsageErrors) {
  TempDir tmp;
  EXPECT_EQ(fetch("", "--bogus", tmp).code, 2);
  EXPECT_EQ(fetch("", "--out", tmp).code, 2);
  FetchResult help = fetch("", "--help", tmp);
  EXPECT_EQ(help.code, 0);
  EXPECT_TRUE(contains(help.output, "usage: tools/fetch-cifar10.sh [--out DIR]")) << help.output;
}

}  // namespace
}  // namespace kiln::test
