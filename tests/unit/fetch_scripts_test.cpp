// tools/fetch-cifar100.sh, fetch-mnist.sh and fetch-fashion-mnist.sh without downloading
// anything: offline they fail clearly and write nothing; a download whose checksum differs is
// refused and writes nothing; a bad argument is a usage error.
#include <cstdlib>
#include <fmt/format.h>
#include <sys/wait.h>

#include "data_test_util.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

struct Script {
  const char* name;     // tools/NAME.sh
  const char* url_var;  // the mirror's environment variable
  const char* offline;  // the URL it fails on first, given the mirror http://127.0.0.1:9/
};
constexpr Script kScripts[] = {
    {"fetch-cifar100", "KILN_CIFAR100_URL", "http://127.0.0.1:9/cifar-100-binary.tar.gz"},
    {"fetch-mnist", "KILN_MNIST_URL", "http://127.0.0.1:9/train-images-idx3-ubyte.gz"},
    {"fetch-fashion-mnist", "KILN_FASHION_MNIST_URL", "http://127.0.0.1:9/train-images-idx3-ubyte.gz"},
};

struct FetchResult {
  int code = -1;
  std::string output;
};

FetchResult fetch(const Script& script, const std::string& url, const std::string& args, const DataDir& tmp) {
  std::string log = tmp.file("fetch.log");
  std::string cmd = fmt::format("{}='{}' bash '{}' {} >'{}' 2>&1", script.url_var, url,
                                repo_path(fmt::format("tools/{}.sh", script.name)), args, log);
  int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_bytes(log)};
}

TEST(FetchScripts, OfflineFailsClearlyAndWritesNothing) {
  for (const Script& script : kScripts) {
    DataDir tmp;
    // The CIFAR-100 mirror is the archive's URL; the IDX mirrors are directories.
    std::string url = std::string(script.name) == "fetch-cifar100" ? script.offline : "http://127.0.0.1:9/";
    FetchResult r = fetch(script, url, "--out " + tmp.file("set"), tmp);
    EXPECT_EQ(r.code, 1) << script.name << ": " << r.output;
    EXPECT_TRUE(contains(r.output, fmt::format("{}: error: could not download {}", script.name, script.offline)))
        << r.output;
    EXPECT_TRUE(contains(r.output, "kiln synth --format")) << r.output;
    EXPECT_FALSE(fs::exists(tmp.file("set"))) << script.name;
  }
}

TEST(FetchScripts, ChecksumMismatchFailsAndWritesNothing) {
  // wget cannot read file:// URLs.
  if (std::system("command -v curl >/dev/null 2>&1") != 0) GTEST_SKIP() << "curl is not installed";
  for (const Script& script : kScripts) {
    DataDir tmp;
    fs::create_directory(tmp.file("mirror"));
    for (const char* f : {"cifar-100-binary.tar.gz", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                          "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
      write_bytes(tmp.file(std::string("mirror/") + f), "not the published file");
    std::string url = std::string(script.name) == "fetch-cifar100" ? "file://" + tmp.file("mirror/cifar-100-binary.tar.gz")
                                                                   : "file://" + tmp.file("mirror") + "/";
    FetchResult r = fetch(script, url, "--out " + tmp.file("set"), tmp);
    EXPECT_EQ(r.code, 1) << script.name << ": " << r.output;
    EXPECT_TRUE(contains(r.output, "checksum mismatch")) << r.output;
    EXPECT_TRUE(contains(r.output, "nothing was written to " + tmp.file("set"))) << r.output;
    EXPECT_FALSE(fs::exists(tmp.file("set"))) << script.name;
  }
}

TEST(FetchScripts, UnknownArgumentIsAUsageError) {
  for (const Script& script : kScripts) {
    DataDir tmp;
    FetchResult r = fetch(script, "http://127.0.0.1:9/", "--outt x", tmp);
    EXPECT_EQ(r.code, 2) << script.name << ": " << r.output;
    EXPECT_TRUE(contains(r.output, fmt::format("{}: unknown argument '--outt'", script.name))) << r.output;
  }
}

TEST(FetchScripts, OutMustBeADirectory) {
  for (const Script& script : kScripts) {
    DataDir tmp;
    write_bytes(tmp.file("file"), "x");
    FetchResult r = fetch(script, "http://127.0.0.1:9/", "--out " + tmp.file("file"), tmp);
    EXPECT_EQ(r.code, 1) << script.name << ": " << r.output;
    EXPECT_TRUE(contains(r.output, tmp.file("file") + " exists and is not a directory")) << r.output;
  }
}

}  // namespace
}  // namespace kiln::test
