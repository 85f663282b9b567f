// kiln predict: image files (PNG, JPEG) of a trained run get the classes kiln eval gives the
// same pixels in dataset form; class names come from the run; bad input is named.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "kiln/kiln.hpp"
#include "../image_files.hpp"
#include "run.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

struct Predict : ::testing::Test {
  Scratch s{"predict"};
  std::string data, run;
  void SetUp() override {
    data = s / "data";
    run = s / "run";
    ASSERT_EQ(run_kiln("synth --out " + data + " --train 500 --test 40 --seed 2").code, 0);
    CliRun r = run_kiln("train " + src("data/models/cifar_quick.yaml") + " --data " + data +
                        " --epochs 1 --batch 50 --threads 2 --device cpu --out " + run);
    ASSERT_EQ(r.code, 0) << r.err;
  }
};

// The first 20 test images as PNG and JPEG files; predict's top class of each becomes its
// label in a CIFAR-10 directory of the decoded pixels, on which eval must score 100%.
TEST_F(Predict, GivesTheClassesEvalGivesTheSamePixels) {
  const Splits source = load_data(data);
  std::vector<std::string> files;
  for (int i = 0; i < 20; ++i) {
    const std::string file = s / fmt::format("img{:02}.{}", i, i % 2 ? "jpg" : "png");
    if (i % 2) write_jpeg(file, source.test.image(i), 3, 32, 32);
    else write_png(file, source.test.image(i), 3, 32, 32);
    files.push_back(file);
  }
  std::string args;
  for (const std::string& f : files) args += " " + f;
  CliRun r = run_kiln("predict " + run + args + " --top 3 --json --device cpu --threads 2");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json out = nlohmann::json::parse(r.out);
  ASSERT_EQ(out.size(), files.size());
  Splits decoded;
  decoded.train.sample = decoded.test.sample = Shape::chw(3, 32, 32);
  for (std::size_t i = 0; i < files.size(); ++i) {
    EXPECT_EQ(out[i].at("file"), files[i]);
    ASSERT_EQ(out[i].at("top").size(), 3u);
    const nlohmann::json& best = out[i].at("top")[0];
    const int k = best.at("index").get<int>();
    EXPECT_EQ(best.at("class").get<std::string>(), source.train.class_names.at(static_cast<std::size_t>(k))) << "named by the run";
    EXPECT_GE(best.at("probability").get<double>(), out[i].at("top")[1].at("probability").get<double>());
    const Image image = decode_image(files[i]);
    if (i % 2 == 0) {  // PNG is lossless: the decoded pixels are the dataset's
      EXPECT_TRUE(std::equal(image.pixels.begin(), image.pixels.end(), source.test.image(static_cast<std::int64_t>(i)))) << files[i];
    }
    for (Dataset* d : {&decoded.train, &decoded.test}) {
      d->images.insert(d->images.end(), image.pixels.begin(), image.pixels.end());
      d->labels.push_back(static_cast<std::uint8_t>(k));
    }
  }
  decoded.train.class_names = decoded.test.class_names = source.train.class_names;
  write_data(decoded, s / "decoded");
  CliRun e = run_kiln("eval " + run + " --data " + (s / "decoded") + " --json --device cpu --threads 2");
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_EQ(nlohmann::json::parse(e.out).at("accuracy").get<double>(), 1.0)
      << "eval's classes of the decoded pixels differ from predict's:\n" << e.out;

  // The plain form: one line per file, its top classes with names and percentages.
  CliRun plain = run_kiln("predict " + run + " " + files[0] + " --top 2 --device cpu");
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_TRUE(has(plain.out, files[0] + ": " + out[0].at("top")[0].at("class").get<std::string>() + " ")) << plain.out;
}

TEST_F(Predict, BadInputIsNamed) {
  const std::string junk = s / "junk.png";
  std::ofstream(junk) << "not an image at all";
  CliRun bad = run_kiln("predict " + run + " " + junk + " --device cpu");
  EXPECT_EQ(bad.code, 1);
  EXPECT_TRUE(has(bad.err, junk)) << bad.err;
  CliRun missing = run_kiln("predict " + run + " " + (s / "nowhere.jpg") + " --device cpu");
  EXPECT_EQ(missing.code, 1);
  EXPECT_TRUE(has(missing.err, s / "nowhere.jpg")) << missing.err;
  CliRun no_weights = run_kiln("predict " + src("data/models/cifar_quick.yaml") + " " + junk);
  EXPECT_EQ(no_weights.code, 2);
  EXPECT_TRUE(has(no_weights.err, "give its weights with --weights, or give a run folder")) << no_weights.err;
  CliRun not_a_run = run_kiln("predict " + (s / "data") + " " + junk);
  EXPECT_EQ(not_a_run.code, 2);
  EXPECT_TRUE(has(not_a_run.err, "is a directory without a run.yaml")) << not_a_run.err;
}

}  // namespace
}  // namespace kiln::test
