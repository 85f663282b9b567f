// An image folder is learnable: PNG and JPEG files of three classes (horizontal stripes,
// vertical stripes, a disc; random colours and noise, 20x20 resized to 16x16) loaded with
// load_data and trained briefly on the CPU classify the test folder far above chance.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <unistd.h>

#include "../image_files.hpp"
#include "kiln/kiln.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

constexpr int kSide = 20;

std::vector<std::uint8_t> draw(int cls, std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255), offset(0, 3), centre(6, 13), radius(4, 6), noise(-20, 20);
  int fg[3], bg[3];
  for (int k = 0; k < 3; ++k) {
    fg[k] = byte(rng);
    bg[k] = (fg[k] + 128) % 256;  // far from the foreground in every channel
  }
  const int phase = offset(rng), cy = centre(rng), cx = centre(rng), r = radius(rng);
  std::vector<std::uint8_t> p(3 * kSide * kSide);
  for (int y = 0; y < kSide; ++y)
    for (int x = 0; x < kSide; ++x) {
      const bool on = cls == 0   ? (y + phase) % 4 < 2
                      : cls == 1 ? (x + phase) % 4 < 2
                                 : (y - cy) * (y - cy) + (x - cx) * (x - cx) <= r * r;
      for (int k = 0; k < 3; ++k)
        p[static_cast<std::size_t>((k * kSide + y) * kSide + x)] = static_cast<std::uint8_t>(std::clamp((on ? fg[k] : bg[k]) + noise(rng), 0, 255));
    }
  return p;
}

Graph small_cnn(Shape input, int classes) {
  GraphBuilder b("small_cnn", input, classes);
  b.add(layers::conv(16, 3).pad(1).named("conv1"))
      .add(layers::batchnorm().named("bn1"))
      .add(layers::relu())
      .add(layers::maxpool(2))
      .add(layers::conv(32, 3).pad(1).named("conv2"))
      .add(layers::batchnorm().named("bn2"))
      .add(layers::relu())
      .add(layers::maxpool(2))
      .add(layers::flatten())
      .add(layers::linear(classes).named("fc"));
  return b.build();
}

TEST(ImageFolderLearn, StripesAndDiscsInPngAndJpeg) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_folder_learn_" + std::to_string(getpid()));
  fs::remove_all(dir);
  std::mt19937 rng(5);
  const std::vector<std::string> names{"hstripes", "vstripes", "disc"};
  for (const auto& [split, count] : {std::pair<std::string, int>{"train", 200}, {"test", 50}})
    for (int cls = 0; cls < 3; ++cls) {
      const fs::path folder = dir / split / names[static_cast<std::size_t>(cls)];
      fs::create_directories(folder);
      for (int i = 0; i < count; ++i) {
        const std::vector<std::uint8_t> p = draw(cls, rng);
        const std::string stem = (folder / ("img" + std::to_string(1000 + i))).string();
        if (i % 2) write_jpeg(stem + ".jpg", p.data(), 3, kSide, kSide, 90);
        else write_png(stem + ".png", p.data(), 3, kSide, kSide);
      }
    }
  LoadOptions o;
  o.sample = Shape::chw(3, 16, 16);
  o.no_cache = true;
  const Splits data = load_data(dir.string(), o);
  fs::remove_all(dir);
  ASSERT_EQ(data.format, DataFormat::folder);
  ASSERT_EQ(data.train.class_names, (std::vector<std::string>{"disc", "hstripes", "vstripes"}));
  ASSERT_EQ(data.train.size(), 600);
  ASSERT_EQ(data.test.size(), 150);

  TrainConfig c;
  c.epochs = 4;
  c.batch = 32;
  c.lr = 0.05;
  c.momentum = 0.9;
  c.nesterov = true;
  c.weight_decay = 5e-4;
  c.schedule.kind = Schedule::Kind::cosine;
  c.seed = 1;
  c.mean = {0.5f, 0.5f, 0.5f};
  c.std = {0.25f, 0.25f, 0.25f};
  RunOptions run;
  run.evaluate = EvalPolicy::never;
  Trainer t(small_cnn(data.train.sample, data.train.classes), c, run);
  t.fit(data);
  const double accuracy = t.evaluate(data.test).accuracy;
  RecordProperty("test_accuracy", std::to_string(accuracy));
  EXPECT_GT(accuracy, 0.8) << "chance is 0.33";
}

}  // namespace
}  // namespace kiln::test
