// The PNG kinds beside 8-bit grey/RGB/RGBA (palette, 16-bit), images too large to decode,
// too many classes, and an image cache that cannot be written.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include <fmt/format.h>

#include "../image_files.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("kiln_decode_" + name + "_" + std::to_string(getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& child) const { return (path / child).string(); }
};

// A 16-bit PNG without gAMA or sRGB chunks (libpng's low-level writer: the simplified one
// writes 16-bit files as linear light with a gAMA chunk). `rows`: big-endian samples, interleaved.
void write_png16(const std::string& path, const std::vector<std::uint8_t>& rows, int c, int h, int w) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, f);
  png_set_IHDR(png, info, static_cast<png_uint_32>(w), static_cast<png_uint_32>(h), 16,
               c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < h; ++y) png_write_row(png, rows.data() + static_cast<std::size_t>(y * w * c * 2));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
}

TEST(DecodePng, PaletteBecomesRgb) {
  TempDir d("palette");
  const std::vector<std::uint8_t> colours{255, 0, 0, 0, 128, 255, 7, 8, 9};  // three RGB entries
  const std::vector<std::uint8_t> indices{0, 1, 2, 2, 1, 0};                 // 2 rows x 3
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = 3;
  image.height = 2;
  image.format = PNG_FORMAT_RGB_COLORMAP;
  image.colormap_entries = 3;
  ASSERT_TRUE(png_image_write_to_file(&image, (d / "p.png").c_str(), 0, indices.data(), 0, colours.data())) << image.message;
  const Image decoded = decode_image(d / "p.png");
  ASSERT_EQ(decoded.c, 3);
  ASSERT_EQ(decoded.h, 2);
  ASSERT_EQ(decoded.w, 3);
  std::vector<std::uint8_t> expected(18);
  for (std::size_t i = 0; i < indices.size(); ++i)
    for (std::size_t k = 0; k < 3; ++k) expected[k * 6 + i] = colours[indices[i] * 3 + k];
  EXPECT_EQ(decoded.pixels, expected);
}

// 16-bit samples v become round(v / 257), as PIL and torchvision read them, not gamma-encoded.
TEST(DecodePng, SixteenBitIsScaled) {
  TempDir d("png16");
  write_png16(d / "grey.png", {0x80, 0x00, 0x40, 0x00, 0xFF, 0xFF, 0x00, 0x00}, 1, 1, 4);
  const Image grey = decode_image(d / "grey.png");
  ASSERT_EQ(grey.c, 1);
  EXPECT_EQ(grey.pixels, (std::vector<std::uint8_t>{128, 64, 255, 0}));
  // One pixel, R = 0x1234, G = 0xABCD, B = 0x0101: 18.1, 171.0, 1.
  write_png16(d / "rgb.png", {0x12, 0x34, 0xAB, 0xCD, 0x01, 0x01}, 3, 1, 1);
  const Image rgb = decode_image(d / "rgb.png");
  ASSERT_EQ(rgb.c, 3);
  EXPECT_EQ(rgb.pixels, (std::vector<std::uint8_t>{18, 171, 1}));
}

TEST(DecodePng, TooLargeIsRefusedByItsHeader) {
  TempDir d("huge");
  const std::vector<std::uint8_t> row(20000, 9);
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = 20000;
  image.height = 1;
  image.format = PNG_FORMAT_GRAY;
  ASSERT_TRUE(png_image_write_to_file(&image, (d / "wide.png").c_str(), 0, row.data(), 0, nullptr));
  try {
    decode_image(d / "wide.png");
    FAIL() << "decoded a 20000-pixel-wide image";
  } catch (const DataError& e) {
    EXPECT_TRUE(contains(e.what(), d / "wide.png" + ": an image of 20000x1 pixels is empty or too large (at most 16384 per side"))
        << e.what();
  }
}

TEST(ImageFolderLimits, MoreThan256ClassesAreRefused) {
  TempDir d("classes");
  const std::uint8_t pixel = 7;
  for (int k = 0; k < 257; ++k) {
    const fs::path folder = d.path / fmt::format("c{}", 1000 + k);
    fs::create_directories(folder);
    write_png((folder / "a.png").string(), &pixel, 1, 1, 1);
  }
  LoadOptions o;
  o.sample = Shape::chw(1, 1, 1);
  o.no_cache = true;
  try {
    load_image_folder(d.path.string(), o);
    FAIL() << "loaded 257 classes";
  } catch (const DataError& e) {
    EXPECT_TRUE(contains(e.what(), "257 class folders; kiln's labels are bytes, so at most 256 classes")) << e.what();
  }
}

// A cache directory that cannot be made (its parent is a file, which stops root too): one
// warning line, and the data loads.
TEST(ImageFolderLimits, UnwritableCacheWarnsAndGoesOn) {
  TempDir d("nocache");
  const std::uint8_t pixels[4] = {10, 20, 30, 40};
  for (const char* c : {"a", "b"}) {
    fs::create_directories(d.path / "data" / c);
    write_png((d.path / "data" / c / "x.png").string(), pixels, 1, 2, 2);
  }
  std::ofstream(d / "file") << "x";
  LoadOptions o;
  o.sample = Shape::chw(1, 2, 2);
  o.cache_dir = d / "file/cache";
  testing::internal::CaptureStderr();
  const Splits s = load_image_folder(d / "data", o);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(s.train.size(), 2);
  EXPECT_EQ(s.train.labels, (std::vector<std::uint8_t>{0, 1}));
  EXPECT_TRUE(contains(err, "kiln: cannot write the image cache in " + d / "file/cache")) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

}  // namespace
}  // namespace kiln::test
