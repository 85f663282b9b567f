#pragma once

// Data augmentation and normalization of one pixel, shared by the CPU loader and the CUDA
// data pipeline so that both see identical images for the same seed.
#include <cstdint>

#include "math/hd.hpp"

namespace kiln::math {

// Per-sample augmentation: a translation (dy, dx) and a horizontal flip. The output pixel
// (y, x) reads the source pixel (y + dy, x' + dx) where x' = W-1-x when flipped: the same as
// torchvision's RandomCrop(padding=p) (dy, dx in [-p, p]) followed by RandomHorizontalFlip.
struct AugmentParams {
  std::int16_t dy = 0;
  std::int16_t dx = 0;
  std::uint8_t flip = 0;
};

// What lies outside the image: zeros (torchvision's RandomCrop padding, applied before
// normalization, so a padded pixel normalizes to -mean/std), or the image reflected about
// its edge (airbench's translate; PyTorch's 'reflect' padding, edge not repeated).
enum class PadMode : std::uint8_t { zero, reflect };

KILN_HD int reflect_index(int i, int n) {
  if (n == 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
  return i;
}

// The normalized value of output pixel (c, y, x) of one image stored channel-major as
// uint8 (CIFAR-10's layout): (pixel/255 - mean[c]) * inv_std[c].
KILN_HD float augmented_pixel(const std::uint8_t* image, int height, int width, int c, int y, int x, AugmentParams a,
                              PadMode mode, float mean, float inv_std) {
  int sx = a.flip ? width - 1 - x : x;
  int sy = y + a.dy;
  sx += a.dx;
  float v = 0.0f;
  if (mode == PadMode::reflect) {
    sy = reflect_index(sy, height);
    sx = reflect_index(sx, width);
    v = static_cast<float>(image[(c * height + sy) * width + sx]) * (1.0f / 255.0f);
  } else if (sy >= 0 && sy < height && sx >= 0 && sx < width) {
    v = static_cast<float>(image[(c * height + sy) * width + sx]) * (1.0f / 255.0f);
  }
  return (v - mean) * inv_std;
}

}  // namespace kiln::math
