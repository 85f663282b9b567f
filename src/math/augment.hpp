#pragma once

// Data augmentation and normalization of one pixel, shared by the CPU loader and the CUDA
// data pipeline so that both see identical images for the same seed.
#include <cstdint>

#include "math/hd.hpp"
#include "math/rng.hpp"

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

// The augmentation of the sample at `position` of an epoch's order, from that epoch's
// augment stream (stream_key(seed, kStreamAugment, epoch)): dy, dx uniform in
// [-max_shift, max_shift] (max_shift < 32768), a flip with probability 1/2 when `flip`.
// One draw per sample, so the CPU loader and a device kernel get the same parameters in
// any order. Multiply-high maps the bits to the range with a bias below 2^-15.
KILN_HD AugmentParams draw_augment(std::uint64_t key, std::uint64_t position, int max_shift, bool flip) {
  std::uint64_t r = random_u64(key, position);
  auto span = static_cast<std::uint64_t>(2 * max_shift + 1);
  AugmentParams a;
  a.dy = static_cast<std::int16_t>(static_cast<int>(((r & 0xFFFFFFFFull) * span) >> 32) - max_shift);
  a.dx = static_cast<std::int16_t>(static_cast<int>((((r >> 32) & 0x7FFFFFFFull) * span) >> 31) - max_shift);
  a.flip = flip ? static_cast<std::uint8_t>(r >> 63) : std::uint8_t{0};
  return a;
}

// airbench's alternating flip: each record gets one random flip for the whole run, and the
// whole set flips on every odd epoch.
KILN_HD std::uint8_t alternating_flip(std::uint64_t run_key, std::uint64_t record, std::int64_t epoch) {
  return static_cast<std::uint8_t>((random_u64(run_key, record) >> 63) ^ static_cast<std::uint64_t>(epoch & 1));
}

}  // namespace kiln::math
