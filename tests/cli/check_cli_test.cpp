// `kiln check` as a user runs it: output, diagnostics on stderr, exit codes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "kiln/types.hpp"
#include "run.hpp"

namespace kiln::test {
namespace {

TEST(CliCheck, ShippedModelsAreValid) {
  for (const char* model : {"cifar_quick", "resnet20", "airbench"}) {
    CliRun r = run_kiln("check " + src(std::string("data/models/") + model + ".yaml"));
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(has(r.out, "ok: ")) << r.out;
    EXPECT_TRUE(r.err.empty()) << r.err;
  }
  CliRun r = run_kiln("check " + src("data/models/cifar_quick.yaml"));
  EXPECT_TRUE(has(r.out, "145,578")) << r.out;
  EXPECT_TRUE(has(r.out, "pool1    maxpool  32x16x16")) << r.out;
  EXPECT_TRUE(has(r.out, "batch 128")) << r.out;  // the spec's train: batch
  EXPECT_TRUE(has(r.out, "peak with reuse")) << r.out;
}

struct SeedCase {
  const char* file;
  const char* location;  // file:line:column suffix
  const char* layer;
  const char* numbers;
};

TEST(CliCheck, SeedFailuresAreCaughtAtBuildTime) {
  const SeedCase cases[] = {
      {"kernel_too_large", ":6:5: error: layer 'conv1' (conv 35x35, stride 1, pad 0)", "conv1",
       "kernel 35x35 is larger than its padded input 32x32"},
      {"pool_too_large", ":10:5: error: layer 'pool4' (maxpool 5x5, stride 5, pad 0)", "pool4",
       "pooling window 5x5 is larger than its padded input 4x4"},
      {"gray_conv", ":6:5: error: layer 'gray' (conv 3x3)", "gray",
       "declares in: 1 channel, but its input 'input' has 3 channels (3x32x32)"},
      {"batchnorm_mismatch", ":7:5: error: layer 'bn1' (batchnorm)", "bn1",
       "declares features: 64, but its input 'conv1' has 32 channels (32x32x32)"},
      {"linear_mismatch", ":10:5: error: layer 'fc' (linear, out 10)", "fc",
       "declares in: 1024, but its input 'flat' has 4096 features"},
      {"linear_without_flatten", ":7:5: error: layer 'fc' (linear, out 10)", "fc", "but its input 'conv1' is 16x32x32"},
      {"input_not_4d", ":7:5: error: layer 'conv1' (conv 3x3)", "conv1",
       "expects a C x H x W input (4-D with the batch), but its input 'flat' is a vector of 3072 features"},
  };
  for (const auto& c : cases) {
    std::string path = src(std::string("tests/specs/") + c.file + ".yaml");
    CliRun r = run_kiln("check " + path);
    SCOPED_TRACE(c.file);
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_TRUE(has(r.err, path + c.location)) << r.err;
    EXPECT_TRUE(has(r.err, c.numbers)) << r.err;
    EXPECT_TRUE(has(r.err, "hint: ")) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

TEST(CliCheck, EveryErrorInOneRun) {
  std::string path = src("tests/specs/several_errors.yaml");
  CliRun r = run_kiln("check " + path);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.err, path + ":6:5: error: layer 'conv1' (conv): missing required key 'kernel'")) << r.err;
  EXPECT_TRUE(has(r.err, path + ":6:38: error: layer 'conv1' (conv): unknown key 'kernal' for op conv")) << r.err;
  EXPECT_TRUE(has(r.err, "hint: did you mean 'kernel'?")) << r.err;
  EXPECT_TRUE(has(r.err, path + ":8:5: error: layer 'branch' (conv 3x3): declares in: 1 channel")) << r.err;
  EXPECT_TRUE(has(r.err, path + ":9:5: error: layer 'pool' (maxpool 64x64, stride 64, pad 0)")) << r.err;
  EXPECT_FALSE(has(r.err, "'bn1'")) << r.err;  // downstream of conv1: not reported again
  std::size_t errors = 0;
  for (std::size_t p = r.err.find("error:"); p != std::string::npos; p = r.err.find("error:", p + 1)) ++errors;
  EXPECT_EQ(errors, 4u) << r.err;
}

TEST(CliCheck, JsonOutput) {
  CliRun ok = run_kiln("check --json " + src("data/models/resnet20.yaml") + " --batch 32");
  ASSERT_EQ(ok.code, 0) << ok.err;
  auto j = nlohmann::json::parse(ok.out);
  EXPECT_TRUE(j["valid"].get<bool>());
  EXPECT_EQ(j["batch"], 32);
  EXPECT_EQ(j["totals"]["params"], 272474);
  EXPECT_EQ(j["layers"][0]["name"], "input");
  EXPECT_LT(j["memory"]["activation_peak_bytes"].get<long>(), j["memory"]["activation_sum_bytes"].get<long>());

  CliRun bad = run_kiln("check --json " + src("tests/specs/gray_conv.yaml"));
  EXPECT_EQ(bad.code, 1);
  auto e = nlohmann::json::parse(bad.out);
  EXPECT_FALSE(e["valid"].get<bool>());
  ASSERT_EQ(e["diagnostics"].size(), 1u);
  EXPECT_EQ(e["diagnostics"][0]["layer"], "gray");
  EXPECT_EQ(e["diagnostics"][0]["line"], 6);
  EXPECT_EQ(e["diagnostics"][0]["column"], 5);
}

TEST(CliCheck, UsageErrorsExitTwo) {
  EXPECT_EQ(run_kiln("").code, 2);
  EXPECT_EQ(run_kiln("check").code, 2);
  EXPECT_EQ(run_kiln("frobnicate").code, 2);
  std::string m = src("data/models/cifar_quick.yaml");
  EXPECT_EQ(run_kiln("check " + m + " --batch 0").code, 2);
  EXPECT_EQ(run_kiln("check " + m + " --batch many").code, 2);
  EXPECT_EQ(run_kiln("check " + m + " --target tpu").code, 2);
  CliRun r = run_kiln("check " + m + " --dtype fp64");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(has(r.err, "--dtype must be fp32, fp16 or bf16, got 'fp64'")) << r.err;
}

TEST(CliCheck, HelpAndVersion) {
  CliRun v = run_kiln("--version");
  EXPECT_EQ(v.code, 0);
  EXPECT_TRUE(has(v.out, "kiln " KILN_VERSION_EXPECTED)) << v.out;
  EXPECT_TRUE(has(v.out, KILN_HAVE_CUDA ? "cuDNN 9." : "CPU only")) << v.out;
  CliRun h = run_kiln("--help");
  EXPECT_EQ(h.code, 0);
  EXPECT_TRUE(has(h.out, "check")) << h.out;
  CliRun ch = run_kiln("check --help");
  EXPECT_EQ(ch.code, 0);
  EXPECT_TRUE(has(ch.out, "--target")) << ch.out;
}

TEST(CliCheck, MissingFileIsInvalidInput) {
  CliRun r = run_kiln("check /nonexistent/m.yaml");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.err, "/nonexistent/m.yaml: error: cannot read the model spec")) << r.err;
}

// A CIFAR-10-format directory with a few records per file.
std::string make_tiny_cifar(const std::string& name, int bad_label_at = -1) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("kiln_cli_" + name + "_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::vector<std::string> files{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                                 "data_batch_5.bin", "test_batch.bin"};
  for (const auto& f : files) {
    std::ofstream out(dir / f, std::ios::binary);
    for (int r = 0; r < 3; ++r) {
      char label = static_cast<char>(r == bad_label_at && f == "data_batch_2.bin" ? 12 : r);
      out.put(label);
      std::string pixels(3072, static_cast<char>(r * 40));
      out.write(pixels.data(), static_cast<std::streamsize>(pixels.size()));
    }
  }
  return dir.string();
}

TEST(CliCheck, DataMatchesModel) {
  std::string dir = make_tiny_cifar("ok");
  CliRun r = run_kiln("check " + src("data/models/cifar_quick.yaml") + " --data " + dir);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "matches input 3x32x32 and 10 classes")) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(CliCheck, DataInTheWrongForm) {
  std::string dir = make_tiny_cifar("form");
  std::string model = std::filesystem::temp_directory_path() / ("kiln_mnist_" + std::to_string(getpid()) + ".yaml");
  std::ofstream(model) << "name: mnist_mlp\ninput: [1, 28, 28]\nclasses: 10\nlayers:\n  - {op: flatten}\n  - {op: linear, out: 10}\n";
  CliRun r = run_kiln("check " + model + " --data " + dir);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.err, model + ":2:8: error: model 'mnist_mlp' takes input 1x28x28, but the cifar10 data in '" + dir +
                             "' has samples of 3x32x32 (3 channels, 32x32)"))
      << r.err;
  EXPECT_TRUE(has(r.err, "hint: a model for cifar10 takes input: [3, 32, 32]")) << r.err;
  std::filesystem::remove_all(dir);
  std::filesystem::remove(model);
}

TEST(CliCheck, BadDataDirectories) {
  CliRun missing = run_kiln("check " + src("data/models/cifar_quick.yaml") + " --data /nonexistent/cifar");
  EXPECT_EQ(missing.code, 1);
  EXPECT_TRUE(has(missing.err, "data directory '/nonexistent/cifar' does not exist")) << missing.err;
  std::string dir = make_tiny_cifar("label", 1);
  CliRun label = run_kiln("check " + src("data/models/cifar_quick.yaml") + " --data " + dir);
  EXPECT_EQ(label.code, 1);
  EXPECT_TRUE(has(label.err, "data_batch_2.bin: record 1 (byte offset 3,073) has label 12; CIFAR-10 labels are 0..9")) << label.err;
  std::filesystem::remove(std::filesystem::path(dir) / "test_batch.bin");
  CliRun partial = run_kiln("check " + src("data/models/cifar_quick.yaml") + " --data " + dir);
  EXPECT_EQ(partial.code, 1);
  EXPECT_TRUE(has(partial.err, "is not a CIFAR-10 binary directory: missing test_batch.bin")) << partial.err;
  std::filesystem::remove_all(dir);
}

TEST(CliCheck, TargetCuda) {
  CliRun r = run_kiln("check " + src("data/models/resnet20.yaml") + " --target cuda --layout nhwc --dtype fp16");
  if (KILN_HAVE_CUDA) {
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(has(r.out, "graph API: conv fwd, bwd-data, bwd-filter")) << r.out;
    EXPECT_TRUE(has(r.out, "operation descriptors finalized for batch 128, fp16, nhwc")) << r.out;
  } else {
    EXPECT_EQ(r.code, 3);
    EXPECT_TRUE(has(r.err, "built without CUDA")) << r.err;
  }
  // Mixed precision: every descriptor of both models finalizes in bf16 and fp16, in NHWC
  // (the default for them on CUDA), on a machine with or without a GPU.
  for (const char* model : {"data/models/airbench.yaml", "data/models/resnet20.yaml"})
    for (const char* dtype : {"bf16", "fp16"}) {
      SCOPED_TRACE(std::string(model) + " " + dtype);
      CliRun half = run_kiln("check " + src(model) + " --target cuda --dtype " + dtype);
      if (!KILN_HAVE_CUDA) continue;
      EXPECT_EQ(half.code, 0) << half.err;
      EXPECT_TRUE(has(half.out, std::string("operation descriptors finalized for batch ") +
                                    (std::string(model).find("airbench") != std::string::npos ? "1024, " : "128, ") + dtype + ", nhwc"))
          << half.out;
      EXPECT_TRUE(has(half.out, std::string("mixed precision: activations, their gradients and conv/linear weights in ") + dtype))
          << half.out;
      EXPECT_EQ(has(half.out, "dynamic loss scaling"), std::string(dtype) == "fp16") << half.out;
      // Each layer's dtype: conv weights in the dtype, batchnorm's parameters in fp32.
      EXPECT_TRUE(has(half.out, std::string(dtype) + ", weights " + dtype + "  graph API: conv fwd")) << half.out;
      EXPECT_TRUE(has(half.out, std::string(dtype) + ", params fp32 ")) << half.out;
    }
  // Each fused group and how it runs, with its layers' rows saying so.
  CliRun groups = run_kiln("check " + src("data/models/airbench.yaml") + " --target cuda --dtype bf16");
  if (KILN_HAVE_CUDA) {
    EXPECT_TRUE(has(groups.out, "fused groups (6;")) << groups.out;
    EXPECT_TRUE(has(groups.out, "  g1_bn1+g1_act1 -> g1_conv2: fused, kiln kernel (batchnorm+gelu)")) << groups.out;
    EXPECT_TRUE(has(groups.out, "  g3_bn2+g3_act2: fused, kiln kernel (batchnorm+gelu)")) << groups.out;
    EXPECT_TRUE(has(groups.out, "cuDNN graph: scale, bias, gelu -> conv fwd -> genstats")) << groups.out;
    EXPECT_TRUE(has(groups.out, "descriptors finalized; engine unverified")) << groups.out;
    EXPECT_TRUE(has(groups.out, "fused into g1_bn1's kernel")) << groups.out;
    CliRun json = run_kiln("check " + src("data/models/resnet20.yaml") + " --target cuda --dtype bf16 --json");
    EXPECT_EQ(json.code, 0) << json.err;
    EXPECT_TRUE(has(json.out, "\"groups\": [")) << json.out;
    EXPECT_TRUE(has(json.out, "kiln kernel (batchnorm+relu)")) << json.out;
  }
  CliRun ceil = run_kiln("check " + src("data/models/cifar_quick.yaml") + " --target cuda");
  if (KILN_HAVE_CUDA) {
    EXPECT_EQ(ceil.code, 0) << ceil.err;
    EXPECT_TRUE(has(ceil.out, "kiln kernel: ceil-mode pooling")) << ceil.out;
  }
}

// --device cuda where there is no usable GPU: kiln's own message and exit 3, before anything
// touches the device; with a GPU, a step runs.
TEST(CliTrain, CudaWithoutADeviceIsAClearError) {
  const std::string dir = (std::filesystem::temp_directory_path() / ("kiln_cli_cuda_" + std::to_string(getpid()))).string();
  ASSERT_EQ(run_kiln("synth --out " + dir + " --train 64 --test 16").code, 0);
  CliRun r = run_kiln("train " + src("data/models/cifar_quick.yaml") + " --device cuda --steps 1 --batch 32 --data " + dir +
                      " --out " + dir + "/run");
  std::filesystem::remove_all(dir);
  if (r.code == 0) GTEST_SKIP() << "a CUDA device is present: trained a step on it";
  EXPECT_EQ(r.code, 3) << r.err;
  const std::string expected = KILN_HAVE_CUDA ? "kiln train: error: --device cuda: no CUDA device" : "built without CUDA";
  EXPECT_TRUE(has(r.err, expected)) << r.err;
  EXPECT_TRUE(has(r.err, "--device cpu")) << r.err;
  EXPECT_FALSE(has(r.err, "cudaStreamCreate")) << r.err;
}

// --layout nhwc on the CPU trains and benchmarks (it was a usage error when the CPU ran NCHW
// only); the header and bench's summary say so.
TEST(CliTrain, CpuRunsNhwc) {
  Scratch scratch("cpu_nhwc");
  ASSERT_EQ(run_kiln("synth --out " + (scratch / "data") + " --train 64 --test 16").code, 0);
  const std::string model = src("data/models/cifar_quick.yaml");
  CliRun train = run_kiln("train " + model + " --device cpu --layout nhwc --steps 2 --batch 32 --data " + (scratch / "data") +
                          " --out " + (scratch / "run"));
  EXPECT_EQ(train.code, 0) << train.err;
  EXPECT_TRUE(has(train.out, "device cpu (nhwc)")) << train.out;
  CliRun bench = run_kiln("bench " + model + " --device cpu --layout nhwc --batch 8 --steps 1 --repeats 1");
  EXPECT_EQ(bench.code, 0) << bench.err;
  EXPECT_TRUE(has(bench.out, "threads, nhwc)")) << bench.out;
}

// --cpu-conv: the header says which kernels a run forces, run.yaml keeps it for --resume
// (which refuses another), bench names each conv's kernels; onednn is refused (exit 2) by a
// build without oneDNN.
// --dtype bf16 on the CPU: emulated, said in the header, recorded in run.yaml and the
// training state, and kept on --resume; the spec's train: dtype: does the same.
TEST(CliTrain, MixedPrecisionOnTheCpu) {
  Scratch scratch("dtype");
  ASSERT_EQ(run_kiln("synth --out " + (scratch / "data") + " --train 64 --test 16").code, 0);
  const std::string model = src("data/models/cifar_quick.yaml");
  CliRun train = run_kiln("train " + model + " --device cpu --dtype bf16 --steps 2 --batch 32 --data " + (scratch / "data") +
                          " --out " + (scratch / "run"));
  ASSERT_EQ(train.code, 0) << train.err;
  EXPECT_TRUE(has(train.out, "device cpu (bf16, emulated in fp32)")) << train.out;
  EXPECT_TRUE(has(slurp((scratch / "run") + "/run.yaml"), "dtype: bf16")) << slurp((scratch / "run") + "/run.yaml");
  CliRun other = run_kiln("train --resume " + (scratch / "run") + " --dtype fp32");
  EXPECT_EQ(other.code, 2) << other.err;
  EXPECT_TRUE(has(other.err, "    --dtype fp32 (the run's: bf16)")) << other.err;
  CliRun more = run_kiln("train --resume " + (scratch / "run") + " --steps 1");
  EXPECT_EQ(more.code, 0) << more.err;
  EXPECT_TRUE(has(more.out, "bf16, emulated in fp32")) << more.out;

  // The spec's train: dtype: fp16, and a loss scale so large that the first step overflows.
  const std::string spec = (scratch / "fp16.yaml");
  std::string text = slurp(model);
  const std::size_t at = text.find("\ntrain:\n");
  ASSERT_NE(at, std::string::npos) << "cifar_quick.yaml has no train section";
  text.insert(at + 8, "  dtype: fp16\n  loss_scale: 1e30\n");
  std::ofstream(spec) << text;
  CliRun fp16 = run_kiln("train " + spec + " --device cpu --steps 3 --batch 32 --data " + (scratch / "data") + " --out " +
                         (scratch / "run16"));
  ASSERT_EQ(fp16.code, 0) << fp16.err;
  EXPECT_TRUE(has(fp16.out, "device cpu (fp16, emulated in fp32)")) << fp16.out;
  EXPECT_TRUE(has(fp16.err, "step 1: the fp16 gradients overflowed at loss scale 1e+30: update skipped, scale halved")) << fp16.err;
  EXPECT_TRUE(has(slurp((scratch / "run16") + "/metrics.jsonl"), "\"skipped\":true")) << slurp((scratch / "run16") + "/metrics.jsonl");
  CliRun bench = run_kiln("bench " + model + " --device cpu --dtype fp16 --batch 8 --steps 1 --repeats 1");
  EXPECT_EQ(bench.code, 0) << bench.err;
  EXPECT_TRUE(has(bench.out, "fp16 emulated")) << bench.out;
}

TEST(CliTrain, CpuConvKernels) {
  Scratch scratch("cpu_conv");
  ASSERT_EQ(run_kiln("synth --out " + (scratch / "data") + " --train 64 --test 16").code, 0);
  const std::string model = src("data/models/cifar_quick.yaml");
  const std::string want = has_onednn() ? "onednn" : "kiln";
  CliRun train = run_kiln("train " + model + " --device cpu --cpu-conv " + want + " --steps 2 --batch 32 --data " +
                          (scratch / "data") + " --out " + (scratch / "run"));
  ASSERT_EQ(train.code, 0) << train.err;
  EXPECT_TRUE(has(train.out, "device cpu (" + want + " convolutions)")) << train.out;
  EXPECT_TRUE(has(slurp((scratch / "run") + "/run.yaml"), "cpu_conv: " + want)) << slurp((scratch / "run") + "/run.yaml");
  CliRun other = run_kiln("train --resume " + (scratch / "run") + " --cpu-conv auto");
  EXPECT_EQ(other.code, 2) << other.err;
  EXPECT_TRUE(has(other.err, "    --cpu-conv auto (the run's: " + want + ")")) << other.err;
  // An edited record with a value kiln does not know is refused, naming the file and the value.
  {
    const std::string record = (scratch / "run") + "/run.yaml";
    std::string text = slurp(record);
    text.replace(text.find("cpu_conv: " + want), 10 + want.size(), "cpu_conv: fast");
    std::ofstream(record) << text;
  }
  CliRun edited = run_kiln("train --resume " + (scratch / "run"));
  EXPECT_EQ(edited.code, 1) << edited.err;
  EXPECT_TRUE(has(edited.err, (scratch / "run") + "/run.yaml: device: layout 'nchw', cpu_conv 'fast' and dtype 'fp32' must be"))
      << edited.err;
  CliRun bench = run_kiln("bench " + model + " --device cpu --batch 8 --steps 1 --repeats 1");
  EXPECT_EQ(bench.code, 0) << bench.err;
  // cifar_quick's conv1 reads 3 channels (kiln's); conv2 and conv3 read 32 (oneDNN's, where built).
  EXPECT_TRUE(has(bench.out, "kiln im2col+gemm")) << bench.out;
  EXPECT_EQ(has(bench.out, "onednn "), has_onednn()) << bench.out;
  // Where the time goes: achieved GFLOP/s per layer and the step's FLOPs (no peak on the CPU).
  EXPECT_TRUE(has(bench.out, "fwd GF/s")) << bench.out;
  EXPECT_TRUE(has(bench.out, "GFLOP per image per training step")) << bench.out;
  EXPECT_FALSE(has(bench.out, "peak:")) << bench.out;
  EXPECT_FALSE(has(bench.out, "% peak")) << bench.out;
  EXPECT_TRUE(has(bench.out, "summed over the layers timed one by one; an epoch of 50,000 images")) << bench.out;
  // The CUDA switches are accepted everywhere, as the other CUDA flags are.
  CliRun flags = run_kiln("bench " + model + " --device cpu --batch 8 --steps 1 --repeats 1 --no-cuda-graph --no-fusion --cudnn-fusion");
  EXPECT_EQ(flags.code, 0) << flags.err;
  if (!has_onednn()) {
    CliRun refused = run_kiln("bench " + model + " --device cpu --cpu-conv onednn --batch 8 --steps 1 --repeats 1");
    EXPECT_EQ(refused.code, 2) << refused.err;
    EXPECT_TRUE(has(refused.err, "no oneDNN")) << refused.err;
  }
}

// A mistyped command or flag is named, with the closest one (the spec checker's suggestion),
// instead of CLI11's "A subcommand is required" or "The following arguments were not
// expected: 1 --epoch"; nonsense numbers are refused. All exit 2 (usage).
TEST(CliErrors, CommandsAndFlagsReadWell) {
  const std::pair<std::string, std::string> cases[] = {
      {"trian", "kiln: error: unknown command 'trian'; did you mean 'train'?"},
      {"frobnicate", "kiln: error: unknown command 'frobnicate'\n    commands: check, train, eval, predict, bench, synth, info"},
      {"train --epoch 1", "kiln train: error: unknown flag --epoch; did you mean --epochs?"},
      {"bench --stepz=3", "kiln bench: error: unknown flag --stepz; did you mean --steps?"},
      {"check --frobnicate", "kiln check: error: unknown flag --frobnicate\n    hint: kiln check --help lists its flags"},
      {"train --lr 0", "--lr: must be a positive number, got 0"},
      {"train --epochs -1", "--epochs: must be a positive number, got -1"},
      {"train --profile-steps 5:2 no-such-model.yaml",
       "--profile-steps must be FIRST:LAST, steps from 1 with FIRST <= LAST (e.g. 50:60), got '5:2'"},
      {"train --profile-steps 0:3 no-such-model.yaml", "got '0:3'"},
  };
  for (const auto& [args, expected] : cases) {
    CliRun r = run_kiln(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_TRUE(has(r.err, expected)) << args << "\n" << r.err;
  }
}

// --device cuda:N picks a device: a malformed index is a usage error (exit 2) in every
// command that takes --device; an index with no such device, or no GPU, exits 3 with kiln's
// message, as --device cuda does.
TEST(CliDevice, CudaIndexParsing) {
  for (const std::string& command : {std::string("train"), std::string("bench"), std::string("eval --weights x")}) {
    for (const char* bad : {"cuda:x", "cuda:", "gpu", "cuda:-1", "cuda:1x"}) {
      CliRun r = run_kiln(command + " " + src("data/models/cifar_quick.yaml") + " --device " + bad);
      EXPECT_EQ(r.code, 2) << command << " --device " << bad << "\n" << r.err;
      EXPECT_TRUE(has(r.err, "must be auto, cpu, cuda or cuda:N")) << r.err;
    }
  }
  Scratch scratch("cuda_index");
  ASSERT_EQ(run_kiln("synth --out " + (scratch / "data") + " --train 64 --test 16").code, 0);
  CliRun r = run_kiln("train " + src("data/models/cifar_quick.yaml") + " --device cuda:7 --steps 1 --batch 32 --data " +
                      (scratch / "data") + " --out " + (scratch / "run"));
  EXPECT_EQ(r.code, 3) << r.err;
  if (!KILN_HAVE_CUDA)
    EXPECT_TRUE(has(r.err, "built without CUDA")) << r.err;
  else
    EXPECT_TRUE(has(r.err, "no CUDA device") || has(r.err, "--device cuda:7: no such device")) << r.err;
}

// An --out that is a file, or lies below one, is a usage error (exit 2) before any data is
// read: here the data directory does not exist, and that error must not come first.
TEST(CliTrain, OutThatIsAFileIsAUsageErrorUpFront) {
  Scratch scratch("out_file");
  const std::string file = scratch / "taken";
  { std::ofstream(file) << "a file, not a run folder\n"; }
  for (const std::string& out : {file, file + "/run"}) {
    CliRun r = run_kiln("train " + src("data/models/cifar_quick.yaml") + " --steps 1 --data " + (scratch / "no-such-data") +
                        " --out " + out);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_TRUE(has(r.err, "--out '" + out + "': " + file + " is not a directory")) << r.err;
    EXPECT_FALSE(has(r.err, "no-such-data")) << r.err;
  }
  EXPECT_EQ(slurp(file), "a file, not a run folder\n");
}

// kiln eval takes --device like train: the CPU evaluates; CUDA without a usable GPU is kiln's
// own message and exit 3.
TEST(CliEval, DeviceCpuAndCudaWithoutADevice) {
  Scratch scratch("eval_device");
  ASSERT_EQ(run_kiln("synth --out " + (scratch / "data") + " --train 64 --test 16").code, 0);
  const std::string model = src("data/models/cifar_quick.yaml");
  CliRun trained = run_kiln("train " + model + " --device cpu --steps 1 --batch 32 --eval none --data " + (scratch / "data") +
                            " --out " + (scratch / "run"));
  ASSERT_EQ(trained.code, 0) << trained.err;
  const std::string eval = "eval " + model + " --weights " + (scratch / "run/model.safetensors") + " --data " + (scratch / "data");
  CliRun cpu = run_kiln(eval + " --device cpu");
  EXPECT_EQ(cpu.code, 0) << cpu.err;
  EXPECT_TRUE(has(cpu.out, "(16 test images)")) << cpu.out;
  CliRun cuda = run_kiln(eval + " --device cuda");
  if (cuda.code == 0) GTEST_SKIP() << "a CUDA device is present: evaluated on it";
  EXPECT_EQ(cuda.code, 3) << cuda.err;
  EXPECT_TRUE(has(cuda.err, KILN_HAVE_CUDA ? "--device cuda: no CUDA device" : "built without CUDA")) << cuda.err;
  EXPECT_EQ(run_kiln(eval + " --device tpu").code, 2);
}

// A number out of range names the option and the value, without CLI11's 310-digit bound.
TEST(CliOptions, NumbersOutOfRangeReadWell) {
  const std::string model = src("data/models/cifar_quick.yaml");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"train " + model + " --batch 0", "--batch: must be a positive number, got 0"},
      {"train " + model + " --epochs -1", "--epochs: must be a positive number, got -1"},
      {"train " + model + " --lr -0.1", "--lr: must be a positive number, got -0.1"},
      {"check " + model + " --batch two", "--batch: must be a positive number, got two"},
      {"synth --out /nonexistent/kiln --train -5", "--train: must be a number of at least 0, got -5"},
  };
  for (const auto& [args, message] : cases) {
    CliRun r = run_kiln(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_TRUE(has(r.err, message)) << args << "\n" << r.err;
    EXPECT_FALSE(has(r.err, "1797693134862315")) << args << "\n" << r.err;
  }
}

}  // namespace
}  // namespace kiln::test
