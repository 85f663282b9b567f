// Decoding PNG and JPEG files, fitting images to a model's input (channel rule, bilinear
// resize), and image folders: layouts, class names, skipped files, refusals and the cache.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <unistd.h>

#include "../image_files.hpp"
#include "data/data_files.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

struct Dir {
  fs::path path;
  explicit Dir(const std::string& name) : path(fs::temp_directory_path() / ("kiln_image_" + name + "_" + std::to_string(getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~Dir() { fs::remove_all(path); }
  std::string operator/(const std::string& child) const { return (path / child).string(); }
};

// A c x h x w image whose bytes are a pattern of (channel, y, x).
std::vector<std::uint8_t> pattern(int c, int h, int w, int seed = 0) {
  std::vector<std::uint8_t> p(static_cast<std::size_t>(c * h * w));
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::uint8_t>((i * 37 + static_cast<std::size_t>(seed) * 101) % 256);
  return p;
}

// Smooth: JPEG keeps it within a few levels.
std::vector<std::uint8_t> gradient(int c, int h, int w) {
  std::vector<std::uint8_t> p(static_cast<std::size_t>(c * h * w));
  for (int k = 0; k < c; ++k)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) p[static_cast<std::size_t>((k * h + y) * w + x)] = static_cast<std::uint8_t>(40 + 4 * x + 3 * y + 20 * k);
  return p;
}

TEST(DecodeImage, PngIsExactInGreyAndRgb) {
  Dir d("png");
  for (int c : {1, 3}) {
    const std::vector<std::uint8_t> p = pattern(c, 5, 7);
    write_png(d / "a.png", p.data(), c, 5, 7);
    const Image image = decode_image(d / "a.png");
    EXPECT_EQ(image.c, c);
    EXPECT_EQ(image.h, 5);
    EXPECT_EQ(image.w, 7);
    EXPECT_EQ(image.pixels, p);
  }
}

TEST(DecodeImage, PngAlphaIsCompositedOnBlack) {
  Dir d("alpha");
  std::vector<std::uint8_t> rgba(4 * 2 * 2, 200);
  for (int i = 0; i < 4; ++i) rgba[static_cast<std::size_t>(3 * 4 + i)] = static_cast<std::uint8_t>(i == 0 ? 255 : i == 1 ? 0 : 128);
  write_png(d / "a.png", rgba.data(), 4, 2, 2);
  const Image image = decode_image(d / "a.png");
  ASSERT_EQ(image.c, 3);
  EXPECT_EQ(image.pixels[0], 200) << "opaque: the colour";
  EXPECT_EQ(image.pixels[1], 0) << "transparent: black";
  // libpng composites in linear light: half of sRGB 200 over black is sRGB 146, not 100.
  EXPECT_NEAR(image.pixels[2], 146, 2) << "half: half the colour's light";
}

TEST(DecodeImage, JpegIsCloseInGreyAndRgb) {
  Dir d("jpeg");
  for (int c : {1, 3}) {
    const std::vector<std::uint8_t> p = gradient(c, 16, 16);
    write_jpeg(d / "a.jpg", p.data(), c, 16, 16, 95);
    const Image image = decode_image(d / "a.jpg");
    ASSERT_EQ(image.c, c);
    ASSERT_EQ(image.pixels.size(), p.size());
    int worst = 0;
    for (std::size_t i = 0; i < p.size(); ++i) worst = std::max(worst, std::abs(image.pixels[i] - p[i]));
    EXPECT_LE(worst, 6) << c << " channels";
  }
}

TEST(DecodeImage, WhatIsNotAnImageIsNamed) {
  Dir d("bad");
  std::ofstream(d / "notes.png") << "just some text";
  try {
    decode_image(d / "notes.png");
    FAIL() << "decoded text";
  } catch (const DataError& e) {
    EXPECT_TRUE(contains(e.what(), d / "notes.png" + ": not a PNG or JPEG image")) << e.what();
  }
  const std::vector<std::uint8_t> p = pattern(3, 8, 8);
  write_png(d / "cut.png", p.data(), 3, 8, 8);
  fs::resize_file(d / "cut.png", 40);
  try {
    decode_image(d / "cut.png");
    FAIL() << "decoded a cut PNG";
  } catch (const DataError& e) {
    EXPECT_TRUE(contains(e.what(), d / "cut.png" + ": corrupt PNG")) << e.what();
  }
  const std::vector<std::uint8_t> jpeg_junk{0xFF, 0xD8, 0xFF, 0x00, 0x13, 0x37, 0x00, 0x01};
  try {
    decode_image(jpeg_junk.data(), jpeg_junk.size(), "junk.jpg");
    FAIL() << "decoded junk";
  } catch (const DataError& e) {
    EXPECT_TRUE(contains(e.what(), "junk.jpg: corrupt JPEG")) << e.what();
  }
  EXPECT_THROW(decode_image(d / "missing.png"), DataError);
}

TEST(FitImage, ChannelRules) {
  Image grey{1, 2, 2, {0, 50, 100, 255}};
  const Image rgb = fit_image(grey, Shape::chw(3, 2, 2), true, "g");
  EXPECT_EQ(rgb.pixels, (std::vector<std::uint8_t>{0, 50, 100, 255, 0, 50, 100, 255, 0, 50, 100, 255}));
  Image colour{3, 1, 2, {255, 0, 0, 255, 0, 0}};  // red, green
  const Image luma = fit_image(colour, Shape::chw(1, 1, 2), true, "c");
  EXPECT_EQ(luma.pixels, (std::vector<std::uint8_t>{76, 150}));  // BT.601: 0.299 * 255, 0.587 * 255, rounded
}

// Expected values: torch.nn.functional.interpolate(mode="bilinear", align_corners=False),
// rounded (PyTorch 1.13).
TEST(FitImage, BilinearMatchesPyTorch) {
  Image up{1, 2, 2, {0, 100, 200, 255}};
  EXPECT_EQ(fit_image(up, Shape::chw(1, 4, 4), true, "up").pixels,
            (std::vector<std::uint8_t>{0, 25, 75, 100, 50, 72, 117, 139, 150, 167, 200, 216, 200, 214, 241, 255}));
  Image down{1, 4, 4, {}};
  for (int i = 0; i < 16; ++i) down.pixels.push_back(static_cast<std::uint8_t>(i * 16));
  EXPECT_EQ(fit_image(down, Shape::chw(1, 2, 3), true, "down").pixels, (std::vector<std::uint8_t>{35, 56, 77, 163, 184, 205}));
}

TEST(FitImage, NoResizeRefusesAnotherSize) {
  Image big{3, 40, 50, std::vector<std::uint8_t>(3 * 40 * 50, 1)};
  try {
    fit_image(big, Shape::chw(3, 32, 32), false, "big.png");
    FAIL();
  } catch (const DataError& e) {
    EXPECT_TRUE(contains(e.what(), "big.png: 50x40 pixels (width x height), but the model takes 32x32")) << e.what();
  }
  EXPECT_EQ(fit_image(big, Shape::chw(3, 40, 50), false, "big.png").pixels, big.pixels);
}

// DIR/train/<class>/ and DIR/test/<class>/ with PNG and JPEG files and some that are not images.
struct Folder {
  Dir d{"folder"};
  explicit Folder(bool two_level = true) {
    const std::vector<std::string> classes{"dog", "cat", "bird"};  // sorted: bird, cat, dog
    for (std::size_t k = 0; k < classes.size(); ++k)
      for (const std::string& split : two_level ? std::vector<std::string>{"train", "test"} : std::vector<std::string>{""}) {
        const fs::path folder = d.path / split / classes[k];
        fs::create_directories(folder);
        for (int i = 0; i < 3; ++i) {
          const std::vector<std::uint8_t> p = pattern(3, 12, 10, static_cast<int>(k * 10) + i);
          if (i == 2) write_jpeg((folder / ("img" + std::to_string(i) + ".JPG")).string(), p.data(), 3, 12, 10);
          else write_png((folder / ("img" + std::to_string(i) + ".png")).string(), p.data(), 3, 12, 10);
        }
      }
    std::ofstream(d.path / (two_level ? "train/cat/.DS_Store" : "cat/.DS_Store")) << "x";
    std::ofstream(d.path / (two_level ? "train/dog/notes.txt" : "dog/notes.txt")) << "x";
  }
  LoadOptions options(const std::string& cache) const {
    LoadOptions o;
    o.sample = Shape::chw(3, 8, 8);
    o.cache_dir = cache;
    return o;
  }
};

std::set<std::string> files_under(const fs::path& dir) {
  std::set<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) files.insert(e.path().string());
  return files;
}

TEST(ImageFolder, TwoLevelLayout) {
  Folder f;
  Dir cache("cache_two");
  EXPECT_EQ(detect_format(f.d.path.string()), DataFormat::folder);
  const auto before = files_under(f.d.path);
  testing::internal::CaptureStderr();
  const Splits s = load_data(f.d.path.string(), f.options(cache.path.string()));
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(s.format, DataFormat::folder);
  EXPECT_EQ(s.train.class_names, (std::vector<std::string>{"bird", "cat", "dog"}));
  EXPECT_EQ(s.train.classes, 3);
  EXPECT_EQ(s.train.size(), 9);
  EXPECT_EQ(s.test.size(), 9);
  EXPECT_EQ(s.train.sample, Shape::chw(3, 8, 8));
  EXPECT_EQ(s.train.labels, (std::vector<std::uint8_t>{0, 0, 0, 1, 1, 1, 2, 2, 2}));
  EXPECT_TRUE(contains(err, "kiln: skipped 2 files without an image extension (.png, .jpg, .jpeg) in " + f.d.path.string())) << err;
  EXPECT_EQ(files_under(f.d.path), before) << "the data folder was written to";
  // Each image is its file decoded and fitted.
  const Image first = fit_image(decode_image(f.d / "train/bird/img0.png"), Shape::chw(3, 8, 8), true, "x");
  EXPECT_TRUE(std::equal(first.pixels.begin(), first.pixels.end(), s.train.image(0)));
}

TEST(ImageFolder, OneLevelLayoutHasNoTestSplit) {
  Folder f(false);
  Dir cache("cache_one");
  const Splits s = load_data(f.d.path.string(), f.options(cache.path.string()));
  EXPECT_EQ(s.train.size(), 9);
  EXPECT_EQ(s.test.size(), 0);
  EXPECT_EQ(s.test.classes, 3);
  EXPECT_EQ(s.test.sample, Shape::chw(3, 8, 8));
}

TEST(ImageFolder, Refusals) {
  Dir cache("cache_refuse");
  {
    Folder f;
    fs::create_directories(f.d.path / "test" / "zebra");
    try {
      load_image_folder(f.d.path.string(), f.options(cache.path.string()));
      FAIL();
    } catch (const DataError& e) {
      EXPECT_TRUE(contains(e.what(), "class 'zebra' of the test split has no folder in")) << e.what();
    }
  }
  {
    Folder f;
    std::ofstream(f.d.path / "train/cat/broken.png") << "not a png";
    try {
      load_image_folder(f.d.path.string(), f.options(cache.path.string()));
      FAIL();
    } catch (const DataError& e) {
      EXPECT_TRUE(contains(e.what(), (f.d.path / "train/cat/broken.png").string() + ": not a PNG or JPEG image")) << e.what();
    }
  }
  {
    Folder f;
    LoadOptions o = f.options(cache.path.string());
    o.resize = false;
    EXPECT_THROW(load_image_folder(f.d.path.string(), o), DataError);  // 10x12 files, 8x8 model
  }
}

TEST(ImageFolder, CacheIsReusedAndFollowsChangedFiles) {
  Folder f;
  Dir cache("cache_reuse");
  const std::int64_t start = detail::folder_decodes();
  const Splits first = load_image_folder(f.d.path.string(), f.options(cache.path.string()));
  EXPECT_EQ(detail::folder_decodes() - start, 18);
  ASSERT_EQ(std::distance(fs::directory_iterator(cache.path), fs::directory_iterator{}), 1) << "one cache file";
  const Splits again = load_image_folder(f.d.path.string(), f.options(cache.path.string()));
  EXPECT_EQ(detail::folder_decodes() - start, 18) << "the second load decoded files again";
  EXPECT_EQ(again.train.images, first.train.images);
  EXPECT_EQ(again.test.images, first.test.images);
  // A changed file (new bytes, new modification time) is decoded again; the rest is not.
  const std::vector<std::uint8_t> p = pattern(3, 12, 10, 99);
  write_png(f.d / "train/cat/img0.png", p.data(), 3, 12, 10);
  fs::last_write_time(f.d / "train/cat/img0.png", fs::file_time_type::clock::now() + std::chrono::seconds(5));
  const Splits changed = load_image_folder(f.d.path.string(), f.options(cache.path.string()));
  EXPECT_EQ(detail::folder_decodes() - start, 19);
  const Image now = fit_image(decode_image(f.d / "train/cat/img0.png"), Shape::chw(3, 8, 8), true, "x");
  EXPECT_TRUE(std::equal(now.pixels.begin(), now.pixels.end(), changed.train.image(3)));
  // Another input size is another cache; a corrupt cache file is rebuilt, not an error.
  for (const auto& e : fs::directory_iterator(cache.path)) fs::resize_file(e.path(), 20);
  const Splits rebuilt = load_image_folder(f.d.path.string(), f.options(cache.path.string()));
  EXPECT_EQ(rebuilt.train.images, changed.train.images);
  EXPECT_EQ(detail::folder_decodes() - start, 37);
  LoadOptions no_cache = f.options(cache.path.string());
  no_cache.no_cache = true;
  load_image_folder(f.d.path.string(), no_cache);
  EXPECT_EQ(detail::folder_decodes() - start, 55);
}

// Plan::predict on a file and on decoded images: the same logits as on the fitted pixels.
TEST(PlanPredict, FilesAndImagesGiveThePixelsLogits) {
  Dir d("plan_predict");
  const std::vector<std::uint8_t> p = pattern(3, 12, 10, 4);
  write_png(d / "a.png", p.data(), 3, 12, 10);
  Graph g = GraphBuilder("tiny", Shape::chw(3, 8, 8), 3).add(layers::flatten()).add(layers::linear(3)).build();
  Target target;
  target.batch = 4;
  Plan plan = compile(g, target);
  const Image fitted = fit_image(decode_image(d / "a.png"), Shape::chw(3, 8, 8), true, "a.png");
  const std::vector<float> expected = plan.predict(fitted.pixels.data(), 1);
  EXPECT_EQ(plan.predict(d / "a.png"), expected);
  const std::vector<Image> images{decode_image(d / "a.png"), decode_image(d / "a.png")};
  std::vector<float> twice = expected;
  twice.insert(twice.end(), expected.begin(), expected.end());
  EXPECT_EQ(plan.predict(std::span<const Image>(images)), twice);
  EXPECT_THROW(plan.predict(d / "a.png", false), DataError) << "10x12 is not the model's 8x8";
  EXPECT_THROW(plan.predict(d / "missing.png"), DataError);
}

}  // namespace
}  // namespace kiln::test
