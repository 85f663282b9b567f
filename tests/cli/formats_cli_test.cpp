// The data formats from the command line: kiln check and train on each format's synthetic
// set with its shipped model, normalization chosen and recorded, the validation split,
// kiln eval of a run folder, and the refusals (an unknown --format, --label without
// CIFAR-100, a bad --val-split, a model for another format's images).
#include <gtest/gtest.h>

#include <filesystem>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "../image_files.hpp"
#include "kiln/kiln.hpp"
#include "run.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

// A small net for any 10- or 100-class image set.
std::string small_model(const Scratch& s, const std::string& name, int channels, int side, int classes) {
  const std::string path = s / (name + ".yaml");
  std::ofstream(path) << "name: " << name << "\ninput: [" << channels << ", " << side << ", " << side << "]\nclasses: " << classes
                      << "\nlayers:\n"
                         "  - {op: conv, out: 16, kernel: 3, pad: 1}\n  - {op: batchnorm}\n  - {op: relu}\n"
                         "  - {op: maxpool, kernel: 2}\n"
                         "  - {op: conv, out: 32, kernel: 3, pad: 1}\n  - {op: batchnorm}\n  - {op: relu}\n"
                         "  - {op: global_avgpool}\n  - {op: flatten}\n  - {op: linear, out: "
                      << classes << "}\ntrain: {batch: 64, lr: 0.05, momentum: 0.9, nesterov: true}\n";
  return path;
}

double last_accuracy(const std::string& json_lines, const char* key) {
  double accuracy = -1;
  std::istringstream in(json_lines);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains(key) && j[key].is_number()) accuracy = j[key].get<double>();
  }
  return accuracy;
}

struct Formats : ::testing::Test {
  Scratch s{"formats"};
  std::string synth(const std::string& format, int train = 2000, int test = 500) {
    const std::string dir = s / format;
    CliRun r = run_kiln("synth --format " + format + " --out " + dir + " --train " + std::to_string(train) + " --test " +
                        std::to_string(test));
    EXPECT_EQ(r.code, 0) << r.err;
    return dir;
  }
};

// The shipped models pass `kiln check --data` on their format's synthetic form, and fail it
// on the other shape, naming both shapes and the format.
TEST_F(Formats, ShippedModelsCheckAgainstTheirFormat) {
  const std::string mnist = synth("mnist", 50, 10), fashion = synth("fashion-mnist", 50, 10), c100 = synth("cifar100", 100, 10),
                    c10 = synth("cifar10", 50, 10);
  for (const auto& [model, dir] : std::vector<std::pair<std::string, std::string>>{
           {"mnist_lenet", mnist}, {"mnist_lenet", fashion}, {"cifar100_airbench", c100}, {"cifar_quick", c10}}) {
    CliRun r = run_kiln("check " + src("data/models/" + model + ".yaml") + " --data " + dir);
    EXPECT_EQ(r.code, 0) << model << " on " << dir << ": " << r.err;
  }
  CliRun wrong = run_kiln("check " + src("data/models/mnist_lenet.yaml") + " --data " + c10);
  EXPECT_EQ(wrong.code, 1);
  EXPECT_TRUE(has(wrong.err, "mnist_lenet.yaml:8:8: error: model 'mnist_lenet' takes input 1x28x28, but the cifar10 data in '" +
                                 c10 + "' has samples of 3x32x32 (3 channels, 32x32)"))
      << wrong.err;
  CliRun classes = run_kiln("check " + src("data/models/cifar_quick.yaml") + " --data " + c100);
  EXPECT_EQ(classes.code, 1);
  EXPECT_TRUE(has(classes.err, "model 'cifar_quick' has classes: 10, but the cifar100 data in '" + c100 + "' has 100 classes"))
      << classes.err;
  // --label coarse: 20 classes, which cifar100_airbench's head does not have.
  CliRun coarse = run_kiln("check " + src("data/models/cifar100_airbench.yaml") + " --data " + c100 + " --label coarse");
  EXPECT_EQ(coarse.code, 1);
  EXPECT_TRUE(has(coarse.err, "has 20 classes")) << coarse.err;
}

// Each format trains end to end on its synthetic set and learns; the normalization is the
// training images' (printed and recorded); kiln eval of the run folder gives the run's own
// final test accuracy.
TEST_F(Formats, EachFormatTrainsLearnsAndEvaluatesFromItsRunFolder) {
  const std::vector<std::tuple<std::string, std::string, double>> cases{
      // At least three times chance (about 0.4, 0.6 and 0.045 were measured).
      {"mnist", src("data/models/mnist_lenet.yaml"), 0.3},
      {"fashion-mnist", small_model(s, "fashion_small", 1, 28, 10), 0.3},
      {"cifar100", small_model(s, "c100_small", 3, 32, 100), 0.03},
  };
  for (const auto& [format, model, floor] : cases) {
    const std::string data = synth(format), out = s / ("run_" + format);
    CliRun r = run_kiln("train " + model + " --data " + data + " --epochs 3 --batch 64 --threads 2 --device cpu --out " + out);
    ASSERT_EQ(r.code, 0) << format << ": " << r.err;
    EXPECT_TRUE(has(r.out, "data: " + data + " (" + format + "), 2000 train / 500 test images")) << r.out;
    EXPECT_TRUE(has(r.out, "(from the training images)")) << r.out;
    const std::string yaml = slurp(out + "/run.yaml");
    EXPECT_TRUE(has(yaml, "format: \"" + format + "\"")) << yaml;
    EXPECT_TRUE(has(yaml, "normalize: {mean: [")) << yaml;
    const double accuracy = last_accuracy(slurp(out + "/metrics.jsonl"), "test_accuracy");
    EXPECT_GT(accuracy, floor) << format << ": chance is " << (format == "cifar100" ? 0.01 : 0.1);
    CliRun e = run_kiln("eval " + out + " --device cpu --threads 2 --json");
    ASSERT_EQ(e.code, 0) << e.err;
    EXPECT_DOUBLE_EQ(nlohmann::json::parse(e.out).at("accuracy").get<double>(), accuracy) << format;
  }
}

// --val-split: a validation line per epoch, the test set once at the end, the split recorded
// so a resumed run holds out the same images and ends on the same weights.
TEST_F(Formats, ValidationSplitFromTheCommandLine) {
  const std::string data = synth("mnist", 600, 100), model = src("data/models/mnist_lenet.yaml");
  const std::string flags = "train " + model + " --data " + data + " --epochs 2 --batch 50 --threads 1 --device cpu --val-split 0.25 ";
  const std::string whole = s / "whole", split = s / "split";
  CliRun r = run_kiln(flags + "--out " + whole);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "450 train / 150 validation / 100 test images")) << r.out;
  EXPECT_TRUE(has(r.out, "epoch 1/2  train loss")) << r.out;
  EXPECT_TRUE(has(r.out, " val loss ")) << r.out;
  EXPECT_TRUE(has(r.out, "test loss ")) << r.out;
  EXPECT_TRUE(has(slurp(whole + "/run.yaml"), "val_split: {count: 150, seed: 0}")) << slurp(whole + "/run.yaml");
  const std::string metrics = slurp(whole + "/metrics.jsonl");
  EXPECT_TRUE(has(metrics, "{\"type\":\"val\",\"step\":9,\"epoch\":1,")) << metrics;
  EXPECT_TRUE(has(metrics, "{\"type\":\"val\",\"step\":18,\"epoch\":2,")) << metrics;
  EXPECT_GT(last_accuracy(metrics, "test_accuracy"), 0.0);

  ASSERT_EQ(run_kiln(flags + "--steps 13 --out " + split).code, 0);
  CliRun resumed = run_kiln("train --resume " + split, "cd / &&");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_TRUE(has(resumed.out, "450 train / 150 validation / 100 test images")) << resumed.out;
  EXPECT_TRUE(slurp(whole + "/model.safetensors") == slurp(split + "/model.safetensors"))
      << "the resumed run held out other images, or normalized otherwise";
  CliRun again = run_kiln("train --resume " + split + " --val-split 10");
  EXPECT_EQ(again.code, 2);
  EXPECT_TRUE(has(again.err, "--val-split 10 (the run's: 150)")) << again.err;
}

TEST_F(Formats, RefusalsReadWell) {
  const std::string mnist = synth("mnist", 50, 10), model = src("data/models/mnist_lenet.yaml");
  CliRun format = run_kiln("train " + model + " --data " + mnist + " --format minst --steps 1");
  EXPECT_EQ(format.code, 2);
  EXPECT_TRUE(has(format.err, "--format must be cifar10, cifar100, mnist or fashion-mnist, got 'minst'; did you mean 'mnist'?"))
      << format.err;
  CliRun label = run_kiln("train " + model + " --data " + mnist + " --label coarse --steps 1");
  EXPECT_EQ(label.code, 2);
  EXPECT_TRUE(has(label.err, "--label picks CIFAR-100's fine or coarse label; the data in '" + mnist + "' is mnist")) << label.err;
  for (const std::string bad : {"0", "1.5", "-3", "ten", "50"}) {
    CliRun v = run_kiln("train " + model + " --data " + mnist + " --val-split " + bad + " --steps 1 --out " + (s / "v"));
    EXPECT_EQ(v.code, 2) << bad << ": " << v.err;
    EXPECT_TRUE(has(v.err, "--val-split")) << bad << ": " << v.err;
    EXPECT_FALSE(fs::exists(s / "v/run.yaml")) << bad;
  }
  CliRun no_data = run_kiln("check " + model + " --format mnist");
  EXPECT_EQ(no_data.code, 2);
  EXPECT_TRUE(has(no_data.err, "--format and --label describe --data")) << no_data.err;
}

// Without --data, the spec's format: picks the synthetic set's shape.
TEST_F(Formats, TheSpecsFormatPicksTheSyntheticSet) {
  CliRun r = run_kiln("train " + src("data/models/mnist_lenet.yaml") + " --steps 2 --batch 32 --threads 1 --device cpu --out " + (s / "r"),
                      "KILN_MNIST_DIR= ");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(has(r.err, "kiln: no mnist found")) << r.err;
  EXPECT_TRUE(has(r.out, "data: synthetic mnist")) << r.out;
}

// An image folder of three easily told classes: horizontal stripes, vertical stripes and
// a checkerboard, with random periods, phases and colours, 48x48 (so loading resizes them
// to the model's 32x32), PNG and JPEG alternately; a notes file in a class folder.
void write_folder(const std::string& root, bool two_level) {
  const char* names[] = {"checker", "hstripes", "vstripes"};
  std::uint64_t state = 12345;
  auto next = [&](int n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((state >> 33) % static_cast<std::uint64_t>(n));
  };
  int n = 0;
  for (const std::string& split : std::vector<std::string>{"train", "test"})
    for (int i = 0; i < (split == "train" ? 240 : 60); ++i) {
      const int label = i % 3, period = 3 + next(4), phase = next(8);
      const std::string dir = root + "/" + (two_level ? split + "/" : std::string()) + names[label];
      fs::create_directories(dir);
      std::vector<std::uint8_t> image(3 * 48 * 48);
      int a[3], b[3];
      for (int c = 0; c < 3; ++c) a[c] = next(256), b[c] = next(256);
      for (int y = 0; y < 48; ++y)
        for (int x = 0; x < 48; ++x) {
          const int u = (y + phase) / period, v = (x + phase) / period;
          const bool on = label == 0 ? (u + v) % 2 == 0 : label == 1 ? u % 2 == 0 : v % 2 == 0;
          for (int c = 0; c < 3; ++c) image[static_cast<std::size_t>((c * 48 + y) * 48 + x)] = static_cast<std::uint8_t>(on ? a[c] : b[c]);
        }
      const std::string file = fmt::format("{}/{:05}.{}", dir, n, n % 2 ? "jpg" : "png");
      if (n % 2) write_jpeg(file, image.data(), 3, 48, 48, 95);
      else write_png(file, image.data(), 3, 48, 48);
      ++n;
    }
  std::ofstream(root + "/" + (two_level ? "train/" : "") + "checker/notes.txt") << "not an image";
}

// A folder of PNG and JPEG files trains, learns, evaluates and predicts with its folder
// names; the one-level layout needs --val-split and says there is no test evaluation.
TEST_F(Formats, ImageFoldersTrainEvaluateAndPredict) {
  const std::string folder = s / "pictures", flat = s / "flat", model = small_model(s, "pictures_small", 3, 32, 3);
  write_folder(folder, true);
  write_folder(flat, false);
  const std::string cache = "KILN_CACHE_DIR=" + (s / "cache") + " ";
  CliRun r = run_kiln("train " + model + " --data " + folder + " --epochs 4 --batch 32 --threads 2 --device cpu --out " + (s / "run"),
                      cache);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "(folder)")) << r.out;
  EXPECT_TRUE(has(r.err, "kiln: skipped 1 files without an image extension (.png, .jpg, .jpeg) in " + folder)) << r.err;
  const double accuracy = last_accuracy(slurp(s / "run/metrics.jsonl"), "test_accuracy");
  EXPECT_GT(accuracy, 0.6) << "three classes: chance is 1/3";
  EXPECT_TRUE(has(slurp(s / "run/run.yaml"), "classes: [\"checker\", \"hstripes\", \"vstripes\"]")) << slurp(s / "run/run.yaml");
  CliRun e = run_kiln("eval " + (s / "run") + " --device cpu --threads 2 --json", cache);
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(e.out).at("accuracy").get<double>(), accuracy);
  CliRun p = run_kiln("predict " + (s / "run") + " " + folder + "/test/hstripes/" + fs::directory_iterator(folder + "/test/hstripes")->path().filename().string() +
                      " --top 3 --device cpu");
  ASSERT_EQ(p.code, 0) << p.err;
  EXPECT_TRUE(has(p.out, ": hstripes ") && has(p.out, "checker") && has(p.out, "vstripes")) << p.out;
  EXPECT_FALSE(fs::exists(folder + "/.cache")) << "nothing is written into the data folder";

  CliRun refused = run_kiln("train " + model + " --data " + flat + " --steps 1 --device cpu --out " + (s / "flat_run"), cache);
  EXPECT_EQ(refused.code, 2);
  EXPECT_TRUE(has(refused.err, "holds class folders but no train/ and test/ folders: give --val-split")) << refused.err;
  CliRun split = run_kiln("train " + model + " --data " + flat + " --val-split 0.2 --epochs 1 --batch 32 --device cpu --out " + (s / "flat_run"),
                          cache);
  ASSERT_EQ(split.code, 0) << split.err;
  EXPECT_TRUE(has(split.out, "validation images, no test split: no test evaluation")) << split.out;
  // A changed image is changed data: the run does not resume on it, and says which folder.
  std::vector<std::uint8_t> grey(3 * 48 * 48, 128);
  write_png(folder + "/train/checker/00000.png", grey.data(), 3, 48, 48);
  CliRun resumed = run_kiln("train --resume " + (s / "run") + " --epochs 5", cache);
  EXPECT_EQ(resumed.code, 1) << resumed.err;
  EXPECT_TRUE(has(resumed.err, "changed since the run started")) << resumed.err;
  EXPECT_TRUE(has(resumed.err, "train/checker/ (81 files)")) << resumed.err;
  CliRun no_resize = run_kiln("train " + model + " --data " + folder + " --no-resize --steps 1 --device cpu --out " + (s / "nr"), cache);
  EXPECT_EQ(no_resize.code, 1);
  EXPECT_TRUE(has(no_resize.err, "48x48 pixels (width x height), but the model takes 32x32")) << no_resize.err;
}

}  // namespace
}  // namespace kiln::test
