// safetensors I/O: round trips, the exact bytes kiln writes, atomic replacement, and every
// corrupt file the reader must refuse with a message that names the file (and the tensor).
// Matching against a graph and interop with PyTorch are in safetensors_match_test.cpp.
#include <signal.h>
#include <sys/resource.h>

#include <bit>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "kiln/checkpoint.hpp"
#include "safetensors_test_util.hpp"

namespace kiln::test::ckpt {
namespace {

namespace fs = std::filesystem;

SafetensorsFile sample() {
  SafetensorsFile file;
  file.tensors.push_back(f32_tensor("conv.weight", {2, 1, 2, 2}, {1.5f, -2.f, 0.f, 3.25f, 1e-7f, -1e7f, 0.5f, 42.f}));
  file.tensors.push_back(i64_tensor("bn.num_batches_tracked", {}, {1234567890123}));
  file.tensors.push_back(i64_tensor("ids", {3, 1}, {-1, 0, std::numeric_limits<std::int64_t>::max()}));
  file.tensors.push_back(f32_tensor("empty", {0, 5}, {}));
  file.tensors.push_back(f32_tensor("scalar", {}, {-0.75f}));
  file.metadata = {{"format", "pt"}, {"epoch", "3"}, {"note", "ünïcode ✓"}};
  return file;
}

void expect_same(const SafetensorsFile& a, const SafetensorsFile& b) {
  EXPECT_EQ(a.metadata, b.metadata);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (std::size_t i = 0; i < a.tensors.size(); ++i) {
    const NamedTensor& x = a.tensors[i];
    const NamedTensor& y = b.tensors[i];
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.type, y.type) << x.name;
    EXPECT_EQ(x.dims, y.dims) << x.name;
    EXPECT_EQ(x.f32, y.f32) << x.name;
    EXPECT_EQ(x.i64, y.i64) << x.name;
  }
}

// ---- writing ----------------------------------------------------------------------------

TEST(Safetensors, RoundTripKeepsValuesShapesOrderAndMetadata) {
  TempDir dir;
  std::string path = dir.file("model.safetensors");
  SafetensorsFile file = sample();
  write_safetensors(path, file);
  SafetensorsFile back = read_safetensors(path);
  expect_same(file, back);
  ASSERT_NE(back.find("bn.num_batches_tracked"), nullptr);
  EXPECT_EQ(back.find("bn.num_batches_tracked")->type, TensorType::i64);
  EXPECT_TRUE(back.find("bn.num_batches_tracked")->dims.empty());
  EXPECT_EQ(back.find("bn.num_batches_tracked")->i64, std::vector<std::int64_t>{1234567890123});
  EXPECT_EQ(back.find("nope"), nullptr);
}

TEST(Safetensors, EmptyMetadataIsOmittedAndReadsBackEmpty) {
  TempDir dir;
  std::string path = dir.file("m.safetensors");
  SafetensorsFile file;
  file.tensors.push_back(f32_tensor("w", {2}, {1.f, 2.f}));
  write_safetensors(path, file);
  EXPECT_FALSE(contains(read_bytes(path), "__metadata__"));
  SafetensorsFile back = read_safetensors(path);
  EXPECT_TRUE(back.metadata.empty());
  expect_same(file, back);

  SafetensorsFile none;  // no tensors at all is a valid file too
  write_safetensors(path, none);
  expect_same(none, read_safetensors(path));
}

TEST(Safetensors, HeaderIsPaddedToEightBytesAndDataIsContiguous) {
  TempDir dir;
  std::string path = dir.file("p.safetensors");
  // Names of every length 1..8 make some header length hit each residue mod 8.
  for (int n = 1; n <= 8; ++n) {
    SafetensorsFile file;
    file.tensors.push_back(f32_tensor(std::string(static_cast<std::size_t>(n), 'a'), {1}, {1.f}));
    file.tensors.push_back(i64_tensor("b", {2}, {1, 2}));
    write_safetensors(path, file);
    std::string bytes = read_bytes(path);
    std::uint64_t length = 0;
    std::memcpy(&length, bytes.data(), 8);
    EXPECT_EQ(length % 8, 0u) << "name length " << n;
    EXPECT_EQ(bytes.size(), 8 + length + 4 + 16);
    std::string header = bytes.substr(8, length);
    EXPECT_EQ(header.front(), '{');
    EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));
    EXPECT_TRUE(contains(header, "\"data_offsets\":[0,4]")) << header;
    EXPECT_TRUE(contains(header, "\"data_offsets\":[4,20]")) << header;
  }
}

TEST(Safetensors, WritesExactlyTheseBytes) {
  TempDir dir;
  std::string path = dir.file("tiny.safetensors");
  SafetensorsFile file;
  file.metadata = {{"k", "v"}};
  file.tensors.push_back(f32_tensor("a", {2}, {1.f, -2.f}));
  file.tensors.push_back(i64_tensor("n", {}, {5}));
  write_safetensors(path, file);
  // JSON: 132 bytes, padded with 4 spaces to 136 = 0x88.
  std::string json =
      R"({"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("n":{"dtype":"I64","shape":[],"data_offsets":[8,16]}})";
  ASSERT_EQ(json.size(), 132u);
  std::string expected = std::string("\x88\0\0\0\0\0\0\0", 8) + json + "    " +
                         std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8) +  // 1.0f, -2.0f
                         std::string("\x05\0\0\0\0\0\0\0", 8);                  // int64 5
  EXPECT_EQ(read_bytes(path), expected);
}

TEST(Safetensors, OverwriteReplacesTheFileAndLeavesNoTemporaryFiles) {
  TempDir dir;
  std::string path = dir.file("ckpt.safetensors");
  write_safetensors(path, sample());
  SafetensorsFile next;
  next.tensors.push_back(f32_tensor("other", {1}, {9.f}));
  write_safetensors(path, next);
  expect_same(next, read_safetensors(path));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ckpt.safetensors"});
}

TEST(Safetensors, WriteIntoMissingDirectoryFailsNamingThePath) {
  TempDir dir;
  std::string path = dir.file("no/such/dir/ckpt.safetensors");
  expect_checkpoint_error([&] { write_safetensors(path, sample()); }, path, {"No such file or directory"});
  EXPECT_TRUE(dir.entries().empty());
}

TEST(Safetensors, FailedRenameRemovesTheTemporaryFile) {
  TempDir dir;
  fs::create_directory(dir.file("taken"));  // a directory can't be renamed over by a file
  std::string path = dir.file("taken");
  expect_checkpoint_error([&] { write_safetensors(path, sample()); }, path, {"renaming", "Is a directory"});
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"taken"});
  EXPECT_TRUE(fs::is_directory(path));
}

// A write that fails half-way (here: the file-size limit, standing in for a full disk) must
// leave the old checkpoint untouched and remove its temporary file.
TEST(Safetensors, FailureMidWriteLeavesTheOldFileIntact) {
  TempDir dir;
  std::string path = dir.file("ckpt.safetensors");
  SafetensorsFile old = sample();
  write_safetensors(path, old);
  std::string old_bytes = read_bytes(path);

  SafetensorsFile big;
  big.tensors.push_back(f32_tensor("big", {1 << 16}, std::vector<float>(1 << 16, 1.f)));
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  rlimit small = saved;
  small.rlim_cur = 4096;
  auto old_handler = signal(SIGXFSZ, SIG_IGN);  // so the write fails with EFBIG instead
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string message;
  try {
    write_safetensors(path, big);
  } catch (const CheckpointError& e) {
    message = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, old_handler);

  EXPECT_TRUE(contains(message, path)) << message;
  EXPECT_TRUE(contains(message, std::strerror(EFBIG))) << message;
  EXPECT_EQ(read_bytes(path), old_bytes);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ckpt.safetensors"});
}

TEST(Safetensors, InconsistentInputIsRefusedBeforeTouchingTheFile) {
  TempDir dir;
  std::string path = dir.file("ckpt.safetensors");
  write_safetensors(path, sample());
  std::string old_bytes = read_bytes(path);

  struct Case {
    const char* what;
    std::function<void(SafetensorsFile&)> spoil;
    std::string tensor;
    std::string says;
  };
  std::vector<Case> cases = {
      {"too few values", [](SafetensorsFile& f) { f.tensors[0].f32.pop_back(); }, "conv.weight", "holds 7 f32 values"},
      {"duplicate", [](SafetensorsFile& f) { f.tensors.push_back(f.tensors[1]); }, "bn.num_batches_tracked",
       "appears twice"},
      {"negative dim", [](SafetensorsFile& f) { f.tensors[3].dims = {-1}; }, "empty", "negative dimension"},
      {"both types", [](SafetensorsFile& f) { f.tensors[4].i64 = {1}; }, "scalar", "also holds 1 values"},
      {"NaN", [](SafetensorsFile& f) { f.tensors[0].f32[3] = std::nanf(""); }, "conv.weight", "nan at element 3"},
      {"reserved name", [](SafetensorsFile& f) { f.tensors[4].name = "__metadata__"; }, "__metadata__", "reserves"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    SafetensorsFile file = sample();
    c.spoil(file);
    auto e = expect_checkpoint_error([&] { write_safetensors(path, file); }, path, {c.says, "'" + c.tensor + "'"});
    EXPECT_EQ(e.tensors(), std::vector<std::string>{c.tensor});
    EXPECT_EQ(read_bytes(path), old_bytes);
    EXPECT_EQ(dir.entries(), std::vector<std::string>{"ckpt.safetensors"});
  }
}

// ---- reading: conversions ---------------------------------------------------------------

TEST(Safetensors, ReadsF16Bf16AndF64AsFp32) {
  TempDir dir;
  std::string path = dir.file("dtypes.safetensors");
  // F16: 1, -2.5, 2^-14 (smallest normal), 2^-24 (smallest subnormal), 65504 (largest), -0.
  std::string f16 = le16({0x3c00, 0xc100, 0x0400, 0x0001, 0x7bff, 0x8000});
  // BF16: 1, -2.5, 3.140625, 2^100.
  std::string bf16 = le16({0x3f80, 0xc020, 0x4049, 0x7180});
  std::string f64 = le_bytes(std::vector<double>{0.1, -1e-3, 123456.789, 0x1p-30, 1e-60});
  std::string data = f16 + bf16 + f64;
  write_raw(path,
            R"({"h":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},)"
            R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[12,20]},)"
            R"("d":{"dtype":"F64","shape":[5],"data_offsets":[20,60]}})",
            data);
  SafetensorsFile file = read_safetensors(path);
  ASSERT_EQ(file.tensors.size(), 3u);
  const NamedTensor* h = file.find("h");
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->type, TensorType::f32);
  EXPECT_EQ(h->dims, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(h->f32, (std::vector<float>{1.f, -2.5f, 0x1p-14f, 0x1p-24f, 65504.f, -0.f}));
  EXPECT_TRUE(std::signbit(h->f32[5]));
  EXPECT_EQ(file.find("b")->f32, (std::vector<float>{1.f, -2.5f, 3.140625f, 0x1p100f}));
  EXPECT_EQ(file.find("d")->f32, (std::vector<float>{0.1f, -1e-3f, 123456.789f, 0x1p-30f, 0.f}));
  EXPECT_TRUE(file.find("d")->i64.empty());
}

TEST(Safetensors, TensorsComeInDataOrderWhateverTheHeaderOrder) {
  TempDir dir;
  std::string path = dir.file("order.safetensors");
  write_raw(path,
            R"({"z":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
            R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
            le_bytes(std::vector<float>{1.f, 2.f}));
  SafetensorsFile file = read_safetensors(path);
  ASSERT_EQ(file.tensors.size(), 2u);
  EXPECT_EQ(file.tensors[0].name, "a");
  EXPECT_EQ(file.tensors[0].f32, std::vector<float>{1.f});
  EXPECT_EQ(file.tensors[1].name, "z");
  EXPECT_EQ(file.tensors[1].f32, std::vector<float>{2.f});
}

// ---- reading: every corrupt file ----------------------------------------------------------

TEST(Safetensors, UnreadableFilesAreCheckpointErrors) {
  TempDir dir;
  std::string missing = dir.file("missing.safetensors");
  expect_checkpoint_error([&] { read_safetensors(missing); }, missing, {"No such file or directory"});

  expect_checkpoint_error([&] { read_safetensors(dir.path()); }, dir.path(), {"is a directory"});

  std::string tiny = dir.file("tiny.safetensors");
  write_bytes(tiny, "abcde");
  expect_checkpoint_error([&] { read_safetensors(tiny); }, tiny, {"is 5 bytes, too short"});
  write_bytes(tiny, "");
  expect_checkpoint_error([&] { read_safetensors(tiny); }, tiny, {"is 0 bytes"});
}

TEST(Safetensors, HeaderLengthMustFitTheFile) {
  TempDir dir;
  std::string path = dir.file("h.safetensors");
  write_bytes(path, le_bytes(std::vector<std::uint64_t>{100}) + "{}");
  expect_checkpoint_error([&] { read_safetensors(path); }, path, {"header length 100 runs past the end", "10 bytes"});
  write_bytes(path, le_bytes(std::vector<std::uint64_t>{std::uint64_t{1} << 62}) + "{}");
  expect_checkpoint_error([&] { read_safetensors(path); }, path, {"is absurd"});
  write_bytes(path, le_bytes(std::vector<std::uint64_t>{100'000'001}) + "{}");
  expect_checkpoint_error([&] { read_safetensors(path); }, path, {"is absurd"});
}

struct HeaderCase {
  const char* what;
  std::string header;
  std::string data;
  std::string says;
  std::vector<std::string> tensors;  // what CheckpointError::tensors() must list
};

class CorruptHeader : public ::testing::TestWithParam<HeaderCase> {};

TEST_P(CorruptHeader, IsRefusedNamingFileAndTensor) {
  const HeaderCase& c = GetParam();
  TempDir dir;
  std::string path = dir.file("corrupt.safetensors");
  write_raw(path, c.header, c.data);
  std::vector<std::string> says = {c.says};
  for (const std::string& t : c.tensors) says.push_back("'" + t + "'");
  auto e = expect_checkpoint_error([&] { read_safetensors(path); }, path, says);
  EXPECT_EQ(e.tensors(), c.tensors);
}

std::string f32_entry(const std::string& name, const std::string& shape, const std::string& offsets,
                      const std::string& dtype = "F32") {
  return fmt::format(R"("{}":{{"dtype":"{}","shape":{},"data_offsets":{}}})", name, dtype, shape, offsets);
}
std::string obj(const std::string& inner) { return "{" + inner + "}"; }
std::string floats(std::vector<float> v) { return le_bytes(v); }

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

INSTANTIATE_TEST_SUITE_P(
    Safetensors, CorruptHeader,
    ::testing::Values(
        HeaderCase{"not JSON", "{\"a\": [1, 2", "", "header is not valid JSON", {}},
        HeaderCase{"empty header", "", "", "header is not valid JSON", {}},
        HeaderCase{"trailing junk", "{} x", "", "header is not valid JSON", {}},
        HeaderCase{"invalid UTF-8", "{\"\xff\": 1}", "", "header is not valid JSON", {}},
        HeaderCase{"array", "[1, 2]", "", "header is a JSON array, not an object", {}},
        HeaderCase{"too deep", obj(R"("w":{"dtype":"F32","shape":[[[1]]],"data_offsets":[0,4]})"), floats({1}),
                   "nests deeper", {}},
        HeaderCase{"entry not object", R"({"w": [1]})", "", "must be an object", {"w"}},
        HeaderCase{"no dtype", obj(R"("w":{"shape":[1],"data_offsets":[0,4]})"), floats({1}), "has no 'dtype'", {"w"}},
        HeaderCase{"no shape", obj(R"("w":{"dtype":"F32","data_offsets":[0,4]})"), floats({1}), "has no 'shape'",
                   {"w"}},
        HeaderCase{"no offsets", obj(R"("w":{"dtype":"F32","shape":[1]})"), floats({1}), "has no 'data_offsets'", {"w"}},
        HeaderCase{"dtype number", obj(R"("w":{"dtype":5,"shape":[1],"data_offsets":[0,4]})"), floats({1}),
                   "'dtype' must be a JSON string, got 5", {"w"}},
        HeaderCase{"shape string", obj(f32_entry("w", "\"1\"", "[0,4]")), floats({1}), "'shape' must be a JSON array",
                   {"w"}},
        HeaderCase{"float dim", obj(f32_entry("w", "[1.5]", "[0,4]")), floats({1}), "must be an integer, got a JSON number (1.5)",
                   {"w"}},
        HeaderCase{"one offset", obj(f32_entry("w", "[1]", "[4]")), floats({1}), "data_offsets must be [begin, end]",
                   {"w"}},
        HeaderCase{"string offset", obj(f32_entry("w", "[1]", R"([0,"4"])")), floats({1}),
                   "data_offsets end must be an integer", {"w"}},
        HeaderCase{"unknown dtype", obj(f32_entry("w", "[1]", "[0,4]", "F99")), floats({1}),
                   "has an unknown dtype F99; kiln reads F32, F16, BF16, F64 (as fp32) and I64", {"w"}},
        HeaderCase{"U8", obj(f32_entry("w", "[4]", "[0,4]", "U8")), floats({1}), "has dtype U8; kiln reads", {"w"}},
        HeaderCase{"BOOL", obj(f32_entry("m", "[4]", "[0,4]", "BOOL")), floats({1}), "has dtype BOOL", {"m"}},
        HeaderCase{"I32", obj(f32_entry("i", "[1]", "[0,4]", "I32")), floats({1}), "has dtype I32", {"i"}},
        HeaderCase{"negative dim", obj(f32_entry("w", "[2,-3]", "[0,4]")), floats({1}),
                   "a dimension of its shape is negative (-3)", {"w"}},
        HeaderCase{"element overflow", obj(f32_entry("w", "[4294967296,4294967296]", "[0,4]")), floats({1}),
                   "shape [4294967296, 4294967296] has more elements than fit in 64 bits", {"w"}},
        HeaderCase{"byte overflow", obj(f32_entry("w", "[4611686018427387904]", "[0,4]")), floats({1}),
                   "more bytes than fit in 64 bits", {"w"}},
        HeaderCase{"huge dim", obj(f32_entry("w", "[18446744073709551615]", "[0,4]")), floats({1}), "is too large",
                   {"w"}},
        HeaderCase{"size mismatch", obj(f32_entry("w", "[3]", "[0,8]")), floats({1, 2, 3}),
                   "data_offsets [0, 8] span 8 bytes, but shape [3] of F32 needs 12 (3 elements x 4 bytes)", {"w"}},
        HeaderCase{"reversed offsets", obj(f32_entry("w", "[1]", "[8,4]")), floats({1, 2, 3}), "end before they begin",
                   {"w"}},
        HeaderCase{"negative offset", obj(f32_entry("w", "[1]", "[-4,0]")), floats({1}),
                   "data_offsets begin is negative (-4)", {"w"}},
        HeaderCase{"past the end", obj(f32_entry("w", "[2]", "[4,12]")), floats({1, 2}),
                   "data_offsets [4, 12] run past the end of the data (8 bytes)", {"w"}},
        HeaderCase{"overlap", obj(f32_entry("a", "[2]", "[0,8]") + "," + f32_entry("b", "[2]", "[4,12]")),
                   floats({1, 2, 3}), "overlap", {"a", "b"}},
        HeaderCase{"duplicate name", obj(f32_entry("w", "[1]", "[0,4]") + "," + f32_entry("w", "[1]", "[4,8]")),
                   floats({1, 2}), "tensor 'w' appears twice", {"w"}},
        HeaderCase{"duplicate key", obj(R"("w":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]})"),
                   floats({1}), "key 'dtype' appears twice", {}},
        HeaderCase{"NaN", obj(f32_entry("w", "[3]", "[0,12]")), floats({1, kNaN, 2}), "holds nan at element 1 (of 3)",
                   {"w"}},
        HeaderCase{"Inf", obj(f32_entry("bn.running_var", "[2]", "[0,8]")), floats({1, -kInf}),
                   "holds -inf at element 1", {"bn.running_var"}},
        HeaderCase{"F16 inf", obj(f32_entry("h", "[2]", "[0,4]", "F16")), le16({0x3c00, 0x7c00}), "holds inf",
                   {"h"}},
        HeaderCase{"BF16 NaN", obj(f32_entry("b", "[1]", "[0,2]", "BF16")), le16({0x7fc0}), "holds nan", {"b"}},
        HeaderCase{"F64 NaN", obj(f32_entry("d", "[1]", "[0,8]", "F64")), le_bytes(std::vector<double>{std::nan("")}),
                   "holds nan", {"d"}},
        HeaderCase{"F64 beyond fp32", obj(f32_entry("d", "[2]", "[0,16]", "F64")),
                   le_bytes(std::vector<double>{1.0, -1e300}), "holds -1e+300 at element 1 (of 2), outside the fp32 range",
                   {"d"}},
        HeaderCase{"metadata not object", R"({"__metadata__": ["a"]})", "",
                   "__metadata__ must be an object of strings, got a JSON array", {}},
        HeaderCase{"metadata value", R"({"__metadata__": {"epoch": 3}})", "",
                   "__metadata__ value of 'epoch' must be a string, got a JSON number", {}}),
    [](const ::testing::TestParamInfo<HeaderCase>& info) {
      std::string name;
      for (char ch : std::string(info.param.what)) name += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
      return name;
    });

}  // namespace
}  // namespace kiln::test::ckpt
