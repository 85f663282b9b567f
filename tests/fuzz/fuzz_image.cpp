// Fuzz harness: the PNG and JPEG decoders (libpng's simplified API, libjpeg-turbo behind
// kiln's error handling), one decoder input per run, then fit_image to a 3x32x32 and a
// 1x28x28 input. decode_image must return a consistent image or throw DataError.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "kiln/kiln.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const kiln::Image image = kiln::decode_image(data, size, "fuzz");
    if ((image.c != 1 && image.c != 3) || image.h < 1 || image.w < 1 ||
        image.pixels.size() != static_cast<std::size_t>(image.c) * static_cast<std::size_t>(image.h) * static_cast<std::size_t>(image.w))
      std::abort();
    // Keep the resize cheap: fuzzed headers may claim large images.
    if (static_cast<std::int64_t>(image.h) * image.w <= 1 << 16)
      for (const kiln::Shape& s : {kiln::Shape::chw(3, 32, 32), kiln::Shape::chw(1, 28, 28)})
        if (kiln::fit_image(image, s, true, "fuzz").pixels.size() != static_cast<std::size_t>(s.elements())) std::abort();
  } catch (const kiln::DataError& e) {
    if (std::string_view(e.what()).empty()) std::abort();
  }
  return 0;
}
