// The catalogue of bad inputs, run through the `kiln` binary as a user would: every one must
// end in exit code 1 with a message naming the file (and the layer, line or tensor) at fault,
// never a crash, a hang or a vague error. The reader-level tests (tests/unit/) check the
// same failures through the API; these check what reaches the terminal.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "run.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;


void write(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// `kiln ARGS` must fail with exit code 1 and say `message` on stderr.
void expect_refused(const std::string& args, const std::string& message) {
  CliRun r = run_kiln(args);
  EXPECT_EQ(r.code, 1) << "kiln " << args << "\n" << r.err;
  EXPECT_TRUE(has(r.err, message)) << "kiln " << args << "\nexpected: " << message << "\nstderr: " << r.err;
}

// ---- CIFAR-10 files ------------------------------------------------------------------------

constexpr int kRecord = 3073;

// A CIFAR-10 directory of two records per file; `check` reads it against cifar_quick.
std::string tiny_cifar(const Scratch& s) {
  const std::string dir = s / "cifar";
  fs::create_directories(dir);
  for (const char* f : {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin",
                        "test_batch.bin"})
    write(dir + "/" + f, std::string(2 * kRecord, '\x01'));
  return dir;
}

std::string check_data(const std::string& dir) { return "check " + src("data/models/cifar_quick.yaml") + " --data " + dir; }

TEST(BadInput, CifarEmptyFile) {
  Scratch s("empty");
  std::string dir = tiny_cifar(s);
  write(dir + "/data_batch_3.bin", "");
  expect_refused(check_data(dir), dir + "/data_batch_3.bin: is empty (0 bytes); a CIFAR-10 batch holds 3,073-byte records");
}

TEST(BadInput, CifarTruncatedFile) {
  Scratch s("trunc");
  std::string dir = tiny_cifar(s);
  write(dir + "/test_batch.bin", std::string(kRecord + 100, '\x01'));
  expect_refused(check_data(dir), dir + "/test_batch.bin: 3,173 bytes is not a whole number of 3,073-byte records: record 1 is truncated (100 of 3,073 bytes)");
}

TEST(BadInput, CifarLabelTen) {
  Scratch s("label");
  std::string dir = tiny_cifar(s);
  std::string records(2 * kRecord, '\x01');
  records[kRecord] = 10;  // the second record's label: one past the last class
  write(dir + "/data_batch_4.bin", records);
  expect_refused(check_data(dir), dir + "/data_batch_4.bin: record 1 (byte offset 3,073) has label 10; CIFAR-10 labels are 0..9");
}

TEST(BadInput, CifarFileThatCannotBeRead) {
  Scratch s("fifo");
  std::string dir = tiny_cifar(s);
  fs::remove(dir + "/data_batch_2.bin");
  ASSERT_EQ(::mkfifo((dir + "/data_batch_2.bin").c_str(), 0600), 0);  // reading would wait forever
  expect_refused(check_data(dir), dir + "/data_batch_2.bin: cannot read: not a regular file");
  fs::remove(dir + "/data_batch_2.bin");
  fs::create_directory(dir + "/data_batch_2.bin");
  expect_refused(check_data(dir), dir + "/data_batch_2.bin: is a directory, not a CIFAR-10 batch file");
}

TEST(BadInput, CifarFileWithoutReadPermission) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root, which reads a file whatever its mode";
  Scratch s("perm");
  std::string dir = tiny_cifar(s);
  fs::permissions(dir + "/data_batch_1.bin", fs::perms::none);
  expect_refused(check_data(dir), dir + "/data_batch_1.bin: cannot read: Permission denied");
}

TEST(BadInput, CifarDirectoryWithoutPermission) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root, which searches a directory whatever its mode";
  Scratch s("dirperm");
  std::string dir = tiny_cifar(s);
  fs::permissions(dir, fs::perms::none);
  expect_refused(check_data(dir), dir + "/data_batch_1.bin: cannot read: Permission denied");
}

TEST(BadInput, CifarMissingFilesAndDirectories) {
  Scratch s("missing");
  std::string dir = tiny_cifar(s);
  fs::remove(dir + "/data_batch_5.bin");
  fs::remove(dir + "/test_batch.bin");
  // (fmt::format, not "'" + string: GCC 12 warns falsely, -Wrestrict, about the latter.)
  expect_refused(check_data(dir), fmt::format("'{}' is not a CIFAR-10 binary directory: missing data_batch_5.bin, test_batch.bin", dir));
  expect_refused(check_data(s / "nowhere"), fmt::format("data directory '{}' does not exist", s / "nowhere"));
  write(s / "plain", "x");
  expect_refused(check_data(s / "plain"), fmt::format("'{}' is not a directory", s / "plain"));
}

// ---- model specs -----------------------------------------------------------------------------

const std::string kHead = "name: t\ninput: [3, 32, 32]\nclasses: 10\n";

std::string check_spec(const Scratch& s, const std::string& name, const std::string& text) {
  write(s / name, text);
  return "check " + (s / name);
}

TEST(BadInput, SpecNestedTooDeeply) {
  Scratch s("deep");
  std::string text = kHead + "layers: " + std::string(5000, '[') + std::string(5000, ']') + "\n";
  CliRun r = run_kiln(check_spec(s, "deep.yaml", text));
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(has(r.err, (s / "deep.yaml") + ":4:")) << r.err;
  EXPECT_TRUE(has(r.err, "error: invalid YAML: lists and mappings nest too deeply (the parser stops at depth 500)")) << r.err;
}

TEST(BadInput, SpecAliasesExpandingExponentially) {
  Scratch s("laughs");
  // Nine to the fifth layers if aliases were copied; yaml-cpp shares them, and each layer
  // that is a list is refused once, in constant time.
  std::string text = kHead + "xa: &a [x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'e'; ++c)
    text += fmt::format("x{0}: &{0} [*{1}, *{1}, *{1}, *{1}, *{1}, *{1}, *{1}, *{1}, *{1}]\n", c, static_cast<char>(c - 1));
  text += "layers: *e\n";
  expect_refused(check_spec(s, "laughs.yaml", text), "layer 1 must be a mapping like {op: relu}, got a list");
}

TEST(BadInput, SpecAliasOfALayerIsTwoLayersWithOneName) {
  Scratch s("alias");
  std::string text = kHead + "layers:\n  - &c {name: c, op: conv, out: 3, kernel: 3, pad: 1}\n  - *c\n  - {op: flatten}\n"
                             "  - {op: linear, out: 10}\n";
  expect_refused(check_spec(s, "alias.yaml", text),
                 (s / "alias.yaml") + ":5:5: error: layer 'c' (conv): duplicate layer name; 'c' is already layer 1");
}

TEST(BadInput, SpecDimensionsWhoseProductsOverflow) {
  Scratch s("huge");
  std::string input = "name: t\ninput: [2147483647, 2147483647, 2147483647]\nclasses: 10\nlayers:\n  - {op: flatten}\n"
                      "  - {op: linear, out: 10}\n";
  expect_refused(check_spec(s, "input.yaml", input),
                 (s / "input.yaml") + ":2:8: error: input [2147483647, 2147483647, 2147483647] has more elements than fit in 64 bits");
  std::string out = kHead + "layers:\n  - {op: conv, out: 4000000000, kernel: 3}\n  - {op: flatten}\n  - {op: linear, out: 10}\n";
  expect_refused(check_spec(s, "out.yaml", out), "out is 4000000000, beyond the largest supported value 2147483647");
}

TEST(BadInput, SpecWithTooManyLayers) {
  Scratch s("long");
  // Name hints and the memory planner take time that grows with the square of the layer
  // count: without a limit a long enough list keeps `kiln check` busy for minutes.
  std::string text = kHead + "layers:\n";
  for (int i = 0; i < 5000; ++i) text += "  - {op: relu}\n";
  text += "  - {op: flatten}\n  - {op: linear, out: 10}\n";
  expect_refused(check_spec(s, "long.yaml", text), (s / "long.yaml") + ":5:3: error: 'layers' lists 5,002 layers; kiln builds models of at most 4,096");
}

TEST(BadInput, SpecNonNumericValues) {
  Scratch s("nonnum");
  std::string text = kHead + "layers:\n  - {op: flatten}\n  - {name: fc, op: linear, out: ten}\n";
  expect_refused(check_spec(s, "nonnum.yaml", text), (s / "nonnum.yaml") + ":6:33");  // the value; the flatten before it is not called unused
  expect_refused(check_spec(s, "nonnum.yaml", text), "layer 'fc' (linear): 'out' must be an integer, got 'ten'");
}

TEST(BadInput, SpecTabsInIndentation) {
  Scratch s("tabs");
  std::string text = kHead + "layers:\n\t- {op: flatten}\n\t- {op: linear, out: 10}\n";
  expect_refused(check_spec(s, "tabs.yaml", text), (s / "tabs.yaml") + ":5:");
  expect_refused(check_spec(s, "tabs.yaml", text), "YAML does not allow tabs in indentation; indent with spaces");
}

TEST(BadInput, SpecByteOrderMark) {
  Scratch s("bom");
  const std::string bom = "\xef\xbb\xbf";
  const std::string layers = "layers:\n  - {op: flatten}\n  - {op: linear, out: 10}\n";
  // At the start a byte-order mark is legal YAML (Windows editors write one): accepted.
  write(s / "lead.yaml", bom + kHead + layers);
  CliRun lead = run_kiln("check " + (s / "lead.yaml"));
  EXPECT_EQ(lead.code, 0) << lead.err;
  // Inside the text (two files joined with cat) it is not.
  expect_refused(check_spec(s, "joined.yaml", kHead + "layers:\n  - {op: flatten}\n" + bom + "  - {op: linear, out: 10}\n"),
                 "line 6 holds a byte-order mark (U+FEFF)");
  // Nor are bytes that are not UTF-8 (a Latin-1 file).
  expect_refused(check_spec(s, "latin1.yaml", "name: caf\xe9\n" + std::string("input: [3, 32, 32]\nclasses: 10\n") + layers),
                 (s / "latin1.yaml") + ":1:10: error: invalid YAML: byte 0xe9 is not UTF-8");
}

TEST(BadInput, SpecThatIsADirectoryOrCannotBeRead) {
  Scratch s("specdir");
  fs::create_directory(s / "model.yaml");
  expect_refused("check " + (s / "model.yaml"), (s / "model.yaml") + ": error: is a directory, not a model spec");
  ASSERT_EQ(::mkfifo((s / "fifo.yaml").c_str(), 0600), 0);  // opening it would wait for a writer forever
  expect_refused("check " + (s / "fifo.yaml"), (s / "fifo.yaml") + ": error: cannot read the model spec: not a regular file");
  expect_refused("check " + (s / "absent.yaml"), (s / "absent.yaml") + ": error: cannot read the model spec: No such file or directory");
  if (::geteuid() != 0) {
    write(s / "locked.yaml", kHead);
    fs::permissions(s / "locked.yaml", fs::perms::none);
    expect_refused("check " + (s / "locked.yaml"), (s / "locked.yaml") + ": error: cannot read the model spec: Permission denied");
  }
}

// ---- checkpoints ---------------------------------------------------------------------------

// A safetensors file: the 8-byte little-endian header length, the JSON header, the data.
struct Tensor {
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::string bytes;
};

std::string safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors, std::int64_t extra_length = 0) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  std::string text = header.dump();
  std::uint64_t length = text.size() + static_cast<std::uint64_t>(extra_length);
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((length >> (8 * i)) & 0xff);
  return out + text + data;
}

std::string floats(std::vector<float> values) {
  std::string bytes(values.size() * 4, '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

// The model of the fuzz harnesses: conv1 [2,3,4,4], bn1, fc [10,32].
const std::string kTiny = src("tests/fuzz/tiny.yaml");

struct Synthetic {
  Scratch scratch{"synth"};
  std::string dir = scratch / "data";
  Synthetic() {
    CliRun r = run_kiln("synth --out " + dir + " --train 20 --test 4");
    EXPECT_EQ(r.code, 0) << r.err;
  }
};

const std::string& synthetic() {
  static Synthetic s;
  return s.dir;
}

std::string eval_weights(const std::string& file) { return "eval " + kTiny + " --weights " + file + " --data " + synthetic(); }

TEST(BadInput, CheckpointWithWrongNames) {
  Scratch s("names");
  write(s / "w.safetensors", safetensors({{"conv9.weight", {"F32", {1}, floats({1})}}}));
  const std::string e = (s / "w.safetensors") + ": does not match model 'fuzz_tiny' (9 problems):";
  expect_refused(eval_weights(s / "w.safetensors"), e);
  expect_refused(eval_weights(s / "w.safetensors"), "conv1.weight: missing from the file (the model expects [2, 3, 4, 4])");
  expect_refused(eval_weights(s / "w.safetensors"), "conv9.weight: unexpected, the model has no parameter or buffer of this name");
}

TEST(BadInput, CheckpointWithWrongShapes) {
  Scratch s("shapes");
  write(s / "w.safetensors", safetensors({{"conv1.weight", {"F32", {2, 3, 3, 3}, floats(std::vector<float>(54, 0.f))}}}));
  expect_refused(eval_weights(s / "w.safetensors"), "conv1.weight: the file has [2, 3, 3, 3], the model expects [2, 3, 4, 4]");
}

TEST(BadInput, CheckpointWithWrongDtype) {
  Scratch s("dtype");
  write(s / "w.safetensors", safetensors({{"conv1.weight", {"I32", {2, 3, 4, 4}, std::string(384, '\0')}}}));
  expect_refused(eval_weights(s / "w.safetensors"),
                 (s / "w.safetensors") + ": tensor 'conv1.weight': has dtype I32; kiln reads F32, F16, BF16, F64 (as fp32) and I64");
}

TEST(BadInput, CheckpointHeaderLengthPastTheEnd) {
  Scratch s("past");
  write(s / "w.safetensors", safetensors({{"conv1.weight", {"F32", {1}, floats({1})}}}, 50));
  expect_refused(eval_weights(s / "w.safetensors"), (s / "w.safetensors") + ": header length 115 runs past the end of the file (77 bytes, 69 after the length)");
  write(s / "empty.safetensors", "");
  expect_refused(eval_weights(s / "empty.safetensors"), (s / "empty.safetensors") + ": is 0 bytes, too short for a safetensors file");
}

TEST(BadInput, CheckpointWithNanOrInf) {
  Scratch s("nonfinite");
  std::vector<float> values(96, 0.25f);
  values[5] = std::numeric_limits<float>::quiet_NaN();
  write(s / "nan.safetensors", safetensors({{"conv1.weight", {"F32", {2, 3, 4, 4}, floats(values)}}}));
  expect_refused(eval_weights(s / "nan.safetensors"),
                 (s / "nan.safetensors") + ": tensor 'conv1.weight': holds nan at element 5 (of 96); a checkpoint must hold finite values");
  values[5] = 0;
  values[95] = -std::numeric_limits<float>::infinity();
  write(s / "inf.safetensors", safetensors({{"conv1.weight", {"F32", {2, 3, 4, 4}, floats(values)}}}));
  expect_refused(eval_weights(s / "inf.safetensors"), "tensor 'conv1.weight': holds -inf at element 95 (of 96)");
}

TEST(BadInput, CheckpointThatIsADirectoryOrMissing) {
  Scratch s("ckdir");
  expect_refused(eval_weights(s.path.string()), s.path.string() + ": is a directory, not a safetensors file");
  expect_refused(eval_weights(s / "absent.safetensors"), (s / "absent.safetensors") + ": cannot open checkpoint: No such file or directory");
  ASSERT_EQ(::mkfifo((s / "fifo.safetensors").c_str(), 0600), 0);
  expect_refused(eval_weights(s / "fifo.safetensors"), (s / "fifo.safetensors") + ": is not a regular file");
}

TEST(BadInput, ResumeFromAnotherModelsDirectory) {
  Scratch s("resume");
  CliRun first = run_kiln("train " + kTiny + " --data " + synthetic() + " --out " + (s / "run") + " --steps 2 --threads 1");
  ASSERT_EQ(first.code, 0) << first.err;
  // The run's run.yaml names its model (a usage error: the command line contradicts the run)...
  CliRun other = run_kiln("train " + src("data/models/cifar_quick.yaml") + " --data " + synthetic() + " --out " +
                          (s / "other") + " --resume " + (s / "run") + " --steps 1 --threads 1");
  EXPECT_EQ(other.code, 2) << other.err;
  EXPECT_TRUE(has(other.err, "    model " + src("data/models/cifar_quick.yaml") + " (the run's: " + kTiny + ")")) << other.err;
  // ...and without it (a folder from before run.yaml), the training state does.
  fs::remove(s / "run/run.yaml");
  expect_refused("train " + src("data/models/cifar_quick.yaml") + " --data " + synthetic() + " --out " + (s / "other") +
                     " --resume " + (s / "run") + " --steps 1 --threads 1",
                 (s / "run") + "/train_state.safetensors: this training state belongs to model 'fuzz_tiny', not 'cifar_quick'");
  // A directory no run wrote, and one that does not exist.
  fs::create_directory(s / "empty");
  expect_refused("train " + kTiny + " --data " + synthetic() + " --out " + (s / "x") + " --resume " + (s / "empty") + " --steps 1",
                 (s / "empty") + "/train_state.safetensors: cannot open checkpoint: No such file or directory");
  expect_refused("train " + kTiny + " --data " + synthetic() + " --out " + (s / "x") + " --resume " + (s / "absent") + " --steps 1",
                 (s / "absent") + "/train_state.safetensors: cannot open checkpoint");
}

}  // namespace
}  // namespace kiln::test
