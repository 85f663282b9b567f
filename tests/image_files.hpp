#pragma once

// Writing PNG and JPEG files in tests (libpng's simplified API, libjpeg-turbo), from images
// in CIFAR's planar layout (C planes of H x W bytes, C = 1 or 3).
#include <cstdio>  // before jpeglib.h, which uses FILE and size_t without including them
#include <jpeglib.h>
#include <png.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln::test {

// Interleaved rows (HWC) from planes (CHW).
inline std::vector<std::uint8_t> interleaved(const std::uint8_t* planes, int c, int h, int w) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(c * h * w));
  for (int k = 0; k < c; ++k)
    for (int i = 0; i < h * w; ++i) out[static_cast<std::size_t>(i * c + k)] = planes[k * h * w + i];
  return out;
}

// `format`: PNG_FORMAT_GRAY, PNG_FORMAT_RGB, or PNG_FORMAT_RGBA with `c` = 4 planes.
inline void write_png(const std::string& path, const std::uint8_t* planes, int c, int h, int w) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(w);
  image.height = static_cast<png_uint_32>(h);
  image.format = c == 1 ? PNG_FORMAT_GRAY : c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_RGBA;
  const std::vector<std::uint8_t> rows = interleaved(planes, c, h, w);
  if (!png_image_write_to_file(&image, path.c_str(), 0, rows.data(), 0, nullptr)) throw std::runtime_error("cannot write " + path);
}

inline void write_jpeg(const std::string& path, const std::uint8_t* planes, int c, int h, int w, int quality = 90) {
  jpeg_compress_struct info{};
  jpeg_error_mgr err{};
  info.err = jpeg_std_error(&err);
  jpeg_create_compress(&info);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot write " + path);
  jpeg_stdio_dest(&info, f);
  info.image_width = static_cast<JDIMENSION>(w);
  info.image_height = static_cast<JDIMENSION>(h);
  info.input_components = c;
  info.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, quality, TRUE);
  jpeg_start_compress(&info, TRUE);
  std::vector<std::uint8_t> rows = interleaved(planes, c, h, w);
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = rows.data() + static_cast<std::size_t>(info.next_scanline) * static_cast<std::size_t>(w * c);
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  std::fclose(f);
}

}  // namespace kiln::test
