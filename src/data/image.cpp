// PNG and JPEG decoding (libpng's simplified API, libjpeg-turbo) and fitting an image to a
// model's input: the channel rule and a bilinear resize.
#include <cstdio>  // before jpeglib.h, which uses FILE and size_t without including them
#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <fmt/format.h>
#include <memory>

#include "data/data_files.hpp"
#include "kiln/data.hpp"
#include "kiln/error.hpp"

namespace kiln {

namespace {

// Larger images are refused before any pixel memory is allocated.
constexpr std::uint64_t kMaxSide = 16384;
constexpr std::uint64_t kMaxPixels = std::uint64_t{1} << 28;

void check_size(std::uint64_t w, std::uint64_t h, const std::string& name) {
  if (w == 0 || h == 0 || w > kMaxSide || h > kMaxSide || w * h > kMaxPixels)
    throw DataError(name, -1, fmt::format("{}: an image of {}x{} pixels is empty or too large (at most {} per side and {} in all)",
                                          name, w, h, kMaxSide, kMaxPixels));
}

// Interleaved rows (HWC) to CIFAR's planes (CHW).
Image planes(const std::uint8_t* hwc, int c, int h, int w) {
  Image image{c, h, w, std::vector<std::uint8_t>(static_cast<std::size_t>(c) * h * w)};
  const std::size_t plane = static_cast<std::size_t>(h) * static_cast<std::size_t>(w);
  for (std::size_t i = 0; i < plane; ++i)
    for (int k = 0; k < c; ++k) image.pixels[static_cast<std::size_t>(k) * plane + i] = hwc[i * static_cast<std::size_t>(c) + static_cast<std::size_t>(k)];
  return image;
}

Image decode_png(const std::uint8_t* bytes, std::size_t size, const std::string& name) {
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes, size))
    throw DataError(name, -1, fmt::format("{}: corrupt PNG: {}", name, png.message));
  try {
    check_size(png.width, png.height, name);
  } catch (...) {
    png_image_free(&png);
    throw;
  }
  // Grey stays grey, everything else (palette, grey+alpha with colour) becomes RGB; 16-bit
  // samples become 8-bit; alpha is composited onto black (the background below).
  const bool grey = (png.format & PNG_FORMAT_FLAG_COLOR) == 0;
  png.format = grey ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  // Without a gAMA or sRGB chunk libpng takes 16-bit samples as linear light and would
  // gamma-encode them (32768 becomes 186); PIL and torchvision scale them (32768 becomes
  // 128), and so does kiln.
  png.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;
  const int c = grey ? 1 : 3;
  std::vector<std::uint8_t> hwc(PNG_IMAGE_SIZE(png));
  png_color black{0, 0, 0};
  if (!png_image_finish_read(&png, &black, hwc.data(), 0, nullptr)) {
    const std::string message = png.message;
    png_image_free(&png);
    throw DataError(name, -1, fmt::format("{}: corrupt PNG: {}", name, message));
  }
  return planes(hwc.data(), c, static_cast<int>(png.height), static_cast<int>(png.width));
}

// libjpeg reports errors by calling error_exit, which must not return: jump back here.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

extern "C" void jpeg_error_exit(j_common_ptr info) {
  auto* e = reinterpret_cast<JpegError*>(info->err);
  (*info->err->format_message)(info, e->message);
  std::longjmp(e->jump, 1);
}

extern "C" void jpeg_quiet(j_common_ptr, int) {}  // warnings (e.g. extraneous bytes) are not errors

Image decode_jpeg(const std::uint8_t* bytes, std::size_t size, const std::string& name) {
  jpeg_decompress_struct info{};
  JpegError err{};
  info.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_quiet;
  // A local changed between setjmp and longjmp is indeterminate after it: the pixels live
  // on the heap behind a pointer that is set before setjmp and never changed.
  const auto pixels = std::make_unique<std::vector<std::uint8_t>>();
  std::vector<std::uint8_t>& hwc = *pixels;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&info);
    throw DataError(name, -1, fmt::format("{}: corrupt JPEG: {}", name, err.message));
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, bytes, static_cast<unsigned long>(size));
  jpeg_read_header(&info, TRUE);
  const bool grey = info.jpeg_color_space == JCS_GRAYSCALE;
  info.out_color_space = grey ? JCS_GRAYSCALE : JCS_RGB;
  if (!grey && (info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK)) {
    jpeg_destroy_decompress(&info);
    throw DataError(name, -1, fmt::format("{}: a CMYK JPEG; kiln reads greyscale and RGB (YCbCr) JPEGs", name));
  }
  if (info.image_width == 0 || info.image_height == 0 || info.image_width > kMaxSide || info.image_height > kMaxSide ||
      static_cast<std::uint64_t>(info.image_width) * info.image_height > kMaxPixels) {
    const auto w = info.image_width, h = info.image_height;
    jpeg_destroy_decompress(&info);
    check_size(w, h, name);
  }
  jpeg_start_decompress(&info);
  const int c = info.output_components, w = static_cast<int>(info.output_width), h = static_cast<int>(info.output_height);
  hwc.resize(static_cast<std::size_t>(c) * static_cast<std::size_t>(w) * static_cast<std::size_t>(h));
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = hwc.data() + static_cast<std::size_t>(info.output_scanline) * static_cast<std::size_t>(w) * static_cast<std::size_t>(c);
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return planes(hwc.data(), c, h, w);
}

}  // namespace

Image decode_image(const std::uint8_t* bytes, std::size_t size, const std::string& name) {
  static constexpr std::uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 8 && std::memcmp(bytes, kPng, 8) == 0) return decode_png(bytes, size, name);
  if (size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return decode_jpeg(bytes, size, name);
  throw DataError(name, -1, fmt::format("{}: not a PNG or JPEG image (its first bytes are neither signature)", name));
}

Image decode_image(const std::string& path) {
  const std::vector<std::uint8_t> bytes = detail::read_file(path, "an image file");
  return decode_image(bytes.data(), bytes.size(), path);
}

Image fit_image(const Image& image, const Shape& sample, bool resize, const std::string& name) {
  if (sample.c != 1 && sample.c != 3)
    throw UsageError(fmt::format("{}: a model input of {} channels takes no images (1: grey, 3: RGB)", name, sample.c));
  if (image.c != 1 && image.c != 3)
    throw DataError(name, -1, fmt::format("{}: {} channels; kiln reads grey and RGB images", name, image.c));
  const int H = static_cast<int>(sample.h), W = static_cast<int>(sample.w);
  if ((image.h != H || image.w != W) && !resize)
    throw DataError(name, -1,
                    fmt::format("{}: {}x{} pixels (width x height), but the model takes {}x{}\n    hint: without --no-resize "
                                "kiln resizes it (bilinear)",
                                name, image.w, image.h, W, H));
  const std::size_t in_plane = static_cast<std::size_t>(image.h) * static_cast<std::size_t>(image.w);
  // The channel rule first, at the source size: grey to RGB copies the plane, RGB to grey
  // is BT.601 luma, rounded.
  std::vector<std::uint8_t> src;
  if (image.c == sample.c) {
    src = image.pixels;
  } else if (image.c == 1) {
    src.resize(3 * in_plane);
    for (int k = 0; k < 3; ++k) std::copy(image.pixels.begin(), image.pixels.end(), src.begin() + static_cast<std::ptrdiff_t>(k * in_plane));
  } else {
    src.resize(in_plane);
    for (std::size_t i = 0; i < in_plane; ++i)
      src[i] = static_cast<std::uint8_t>(std::lround(0.299 * image.pixels[i] + 0.587 * image.pixels[in_plane + i] +
                                                     0.114 * image.pixels[2 * in_plane + i]));
  }
  Image out{static_cast<int>(sample.c), H, W, {}};
  if (image.h == H && image.w == W) {
    out.pixels = std::move(src);
    return out;
  }
  // Bilinear with half-pixel centres and edge clamping (align_corners=False, no antialias):
  // output pixel x samples the source at (x + 0.5) * in / out - 0.5.
  out.pixels.resize(static_cast<std::size_t>(sample.c) * static_cast<std::size_t>(H) * static_cast<std::size_t>(W));
  auto axis = [](int out_size, int in_size, int i, int& lo, int& hi, float& t) {
    const float x = std::max(0.0f, (static_cast<float>(i) + 0.5f) * static_cast<float>(in_size) / static_cast<float>(out_size) - 0.5f);
    lo = std::min(static_cast<int>(x), in_size - 1);
    hi = std::min(lo + 1, in_size - 1);
    t = x - static_cast<float>(lo);
  };
  for (int k = 0; k < sample.c; ++k) {
    const std::uint8_t* p = src.data() + static_cast<std::size_t>(k) * in_plane;
    std::uint8_t* q = out.pixels.data() + static_cast<std::size_t>(k) * static_cast<std::size_t>(H) * static_cast<std::size_t>(W);
    for (int y = 0; y < H; ++y) {
      int y0, y1;
      float ty;
      axis(H, image.h, y, y0, y1, ty);
      for (int x = 0; x < W; ++x) {
        int x0, x1;
        float tx;
        axis(W, image.w, x, x0, x1, tx);
        auto at = [&](int yy, int xx) { return static_cast<float>(p[static_cast<std::size_t>(yy) * static_cast<std::size_t>(image.w) + static_cast<std::size_t>(xx)]); };
        const float top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * tx;
        const float bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * tx;
        const float v = top + (bottom - top) * ty;
        q[static_cast<std::size_t>(y) * static_cast<std::size_t>(W) + static_cast<std::size_t>(x)] =
            static_cast<std::uint8_t>(std::clamp(std::lround(v), 0L, 255L));
      }
    }
  }
  return out;
}

}  // namespace kiln
