// Matching a safetensors file against a graph's parameters, and interop with the reference
// safetensors implementation and PyTorch (tests/python/safetensors_interop.py).
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "kiln/checkpoint.hpp"
#include "safetensors_test_util.hpp"

namespace kiln::test::ckpt {
namespace {

// conv1 [4, 3, 3, 3] + [4]; bn weight, bias, running_mean, running_var [4]; fc [10, 144] + [10].
Graph tiny_graph() {
  GraphBuilder b("t", Shape::chw(3, 8, 8), 10);
  b.add(layers::conv(4, 3).named("conv1"))
      .add(layers::batchnorm().named("bn"))
      .add(layers::flatten())
      .add(layers::linear(10).named("fc"));
  return b.build();
}

// The values tests/python/safetensors_interop.py uses, so each side checks the other's
// numbers exactly.
std::vector<float> pattern(const std::string& name, std::int64_t n) {
  int seed = 0;
  for (unsigned char ch : name) seed += ch;
  seed %= 23;
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = static_cast<float>((i * 7 + seed) % 23 - 11) / 8.f;
  return v;
}

constexpr std::int64_t kNumBatchesTracked = 1234567890123;

SafetensorsFile weights_for(const Graph& g) {
  SafetensorsFile file;
  for (const Param& p : g.params()) {
    std::int64_t n = 1;
    for (std::int64_t d : p.dims) n *= d;
    file.tensors.push_back(f32_tensor(p.name, p.dims, pattern(p.name, n)));
  }
  return file;
}

std::vector<std::string> names_of(const Graph& g) {
  std::vector<std::string> names;
  for (const Param& p : g.params()) names.push_back(p.name);
  return names;
}

TEST(MatchWeights, ExactMatchReturnsTensorsInParamOrder) {
  Graph g = tiny_graph();
  ASSERT_EQ(names_of(g), (std::vector<std::string>{"conv1.weight", "conv1.bias", "bn.weight", "bn.bias",
                                                    "bn.running_mean", "bn.running_var", "fc.weight", "fc.bias"}));
  SafetensorsFile file = weights_for(g);
  std::reverse(file.tensors.begin(), file.tensors.end());  // file order must not matter
  auto matched = match_weights(g, file, "w.safetensors");
  ASSERT_EQ(matched.size(), g.params().size());
  for (std::size_t i = 0; i < matched.size(); ++i) {
    ASSERT_NE(matched[i], nullptr);
    EXPECT_EQ(matched[i]->name, g.params()[i].name);
    EXPECT_EQ(matched[i]->dims, g.params()[i].dims);
  }
  EXPECT_EQ(matched[6]->dims, (std::vector<std::int64_t>{10, 144}));
}

TEST(MatchWeights, BatchnormStepCounterIsAcceptedAndIgnored) {
  Graph g = tiny_graph();
  SafetensorsFile file = weights_for(g);
  file.tensors.push_back(i64_tensor("bn.num_batches_tracked", {}, {kNumBatchesTracked}));
  auto matched = match_weights(g, file, "w.safetensors");
  EXPECT_EQ(matched.size(), g.params().size());
  for (const NamedTensor* t : matched) EXPECT_NE(t->name, "bn.num_batches_tracked");

  // ...but only for a batchnorm layer.
  file.tensors.push_back(i64_tensor("fc.num_batches_tracked", {}, {1}));
  file.tensors.push_back(i64_tensor("nope.num_batches_tracked", {}, {1}));
  auto e = expect_checkpoint_error([&] { match_weights(g, file, "w.safetensors"); }, "w.safetensors",
                                   {"2 problems", "fc.num_batches_tracked: unexpected", "nope.num_batches_tracked"});
  EXPECT_EQ(e.tensors(), (std::vector<std::string>{"fc.num_batches_tracked", "nope.num_batches_tracked"}));
}

TEST(MatchWeights, ReportsEveryProblemAtOnce) {
  Graph g = tiny_graph();
  SafetensorsFile file = weights_for(g);
  auto find = [&](const std::string& name) -> NamedTensor& {
    for (NamedTensor& t : file.tensors)
      if (t.name == name) return t;
    throw std::runtime_error(name);
  };
  NamedTensor& conv = find("conv1.weight");
  conv.dims = {16, 3, 3, 3};
  conv.f32.resize(16 * 27);
  std::erase_if(file.tensors, [](const NamedTensor& t) { return t.name == "bn.running_var"; });
  find("fc.bias") = i64_tensor("fc.bias", {10}, std::vector<std::int64_t>(10, 1));
  file.tensors.push_back(f32_tensor("head.weight", {2, 2}, {1, 2, 3, 4}));

  std::string path = "/ckpt/epoch3.safetensors";
  auto e = expect_checkpoint_error(
      [&] { match_weights(g, file, path); }, path,
      {"does not match model 't' (4 problems):",
       "\n    conv1.weight: the file has [16, 3, 3, 3], the model expects [4, 3, 3, 3]",
       "\n    bn.running_var: missing from the file (the model expects [4])",
       "\n    fc.bias: the file has an I64 tensor, the model expects a floating-point parameter",
       "\n    head.weight: unexpected, the model has no parameter or buffer of this name (the file has [2, 2])"});
  EXPECT_EQ(e.tensors(), (std::vector<std::string>{"conv1.weight", "bn.running_var", "fc.bias", "head.weight"}));
  EXPECT_FALSE(contains(e.what(), "hint"));
}

TEST(MatchWeights, NamesUnderAWrapperPrefixGetAHint) {
  Graph g = tiny_graph();
  SafetensorsFile file = weights_for(g);
  for (NamedTensor& t : file.tensors) t.name = "module." + t.name;
  auto e = expect_checkpoint_error([&] { match_weights(g, file, "dp.safetensors"); }, "dp.safetensors",
                                   {"16 problems", "conv1.weight: missing", "module.conv1.weight: unexpected",
                                    "hint: the file's names carry a prefix 'module.'"});
  EXPECT_EQ(e.tensors().size(), 16u);
}

TEST(MatchWeights, ReadBackFromDiskMatches) {
  Graph g = tiny_graph();
  TempDir dir;
  std::string path = dir.file("w.safetensors");
  SafetensorsFile file = weights_for(g);
  file.tensors.push_back(i64_tensor("bn.num_batches_tracked", {}, {3}));
  write_safetensors(path, file);
  SafetensorsFile back = read_safetensors(path);
  auto matched = match_weights(g, back, path);
  EXPECT_EQ(matched[0]->f32, pattern("conv1.weight", 108));
}

// ---- interop with the reference implementation and PyTorch ---------------------------------

class SafetensorsInterop : public ::testing::Test {
 protected:
  // Runs the script; returns its exit status and prints its output into `output`.
  int run(const std::string& command) {
    const char* env = std::getenv("KILN_PYTHON");
    std::string python = env && *env ? env : "/usr/bin/python3";
    if (!std::filesystem::exists(python)) {
      output = python + " does not exist (set KILN_PYTHON)";
      return 3;
    }
    std::string log = dir.file("python.log");
    std::string line = fmt::format("'{}' '{}' {} '{}' > '{}' 2>&1", python, repo_path("tests/python/safetensors_interop.py"),
                                   command, dir.path(), log);
    int status = std::system(line.c_str());
    output = read_bytes(log);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  TempDir dir;
  std::string output;
};

TEST_F(SafetensorsInterop, KilnReadsWhatPythonWrote) {
  int rc = run("write");
  if (rc == 3) GTEST_SKIP() << "python interop not available: " << output;
  ASSERT_EQ(rc, 0) << output;

  // A torch state dict, num_batches_tracked included, matches the kiln graph as it is.
  Graph g = tiny_graph();
  std::string model = dir.file("python_model.safetensors");
  SafetensorsFile state = read_safetensors(model);
  EXPECT_EQ(state.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  auto matched = match_weights(g, state, model);
  for (std::size_t i = 0; i < matched.size(); ++i)
    EXPECT_EQ(matched[i]->f32, pattern(g.params()[i].name, g.params()[i].elements)) << g.params()[i].name;
  const NamedTensor* counter = state.find("bn.num_batches_tracked");
  ASSERT_NE(counter, nullptr);
  EXPECT_EQ(counter->type, TensorType::i64);
  EXPECT_TRUE(counter->dims.empty());
  EXPECT_EQ(counter->i64, std::vector<std::int64_t>{kNumBatchesTracked});

  std::string dtypes_path = dir.file("python_dtypes.safetensors");
  SafetensorsFile dtypes = read_safetensors(dtypes_path);
  EXPECT_EQ(dtypes.metadata.at("written_by"), "safetensors_interop.py");
  auto expect = [&](const char* name, std::vector<std::int64_t> dims, std::vector<float> values) {
    const NamedTensor* t = dtypes.find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->type, TensorType::f32) << name;
    EXPECT_EQ(t->dims, dims) << name;
    EXPECT_EQ(t->f32, values) << name;
  };
  expect("f16", {2, 3}, {1.f, -2.5f, 0x1p-14f, 0x1p-24f, 65504.f, -0.f});
  expect("bf16", {4}, {1.f, -2.5f, 3.140625f, 0x1p100f});
  expect("f64", {2, 2}, {0.1f, -1e-3f, 123456.789f, 0x1p-30f});
  expect("f32", {3}, {0.5f, -0.25f, 1e-20f});
  expect("empty", {0, 3}, {});
  const NamedTensor* i64 = dtypes.find("i64");
  ASSERT_NE(i64, nullptr);
  EXPECT_EQ(i64->dims, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(i64->i64, (std::vector<std::int64_t>{-(std::int64_t{1} << 40), 0, 7, 1, -1, std::int64_t{1} << 62}));
  ASSERT_NE(dtypes.find("i64_scalar"), nullptr);
  EXPECT_TRUE(dtypes.find("i64_scalar")->dims.empty());
  EXPECT_EQ(dtypes.find("i64_scalar")->i64, std::vector<std::int64_t>{42});
}

TEST_F(SafetensorsInterop, PythonReadsWhatKilnWroteAndTorchLoadsItStrictly) {
  Graph g = tiny_graph();
  SafetensorsFile model = weights_for(g);
  model.tensors.push_back(i64_tensor("bn.num_batches_tracked", {}, {kNumBatchesTracked}));
  model.metadata = {{"format", "pt"}, {"producer", "kiln"}};
  write_safetensors(dir.file("kiln_model.safetensors"), model);

  SafetensorsFile misc;
  misc.tensors.push_back(i64_tensor("i64", {2, 3}, {-(std::int64_t{1} << 40), 0, 7, 1, -1, std::int64_t{1} << 62}));
  misc.tensors.push_back(f32_tensor("scalar", {}, {-0.75f}));
  misc.tensors.push_back(f32_tensor("empty", {0, 3}, {}));
  write_safetensors(dir.file("kiln_misc.safetensors"), misc);

  int rc = run("check");
  if (rc == 3) GTEST_SKIP() << "python interop not available: " << output;
  EXPECT_EQ(rc, 0) << output;
}

}  // namespace
}  // namespace kiln::test::ckpt
