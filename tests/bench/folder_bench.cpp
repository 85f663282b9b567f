// How fast image folders load: 2,000 generated 64x64 PNG and JPEG files fitted to 3x32x32,
// without the cache, with a cold one (decode and write it) and a warm one. Not a test: run
//   build/tests/folder_bench [DIR] [CACHE_DIR]
// (defaults /tmp/kiln_folder_bench and /tmp/kiln_folder_bench_cache; OMP_NUM_THREADS sets
// the decoding threads). The files were just written, so they are read from the page cache.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fmt/format.h>

#include "../image_files.hpp"
#include "kiln/kiln.hpp"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const fs::path root = argc > 1 ? argv[1] : "/tmp/kiln_folder_bench";
  const fs::path cache = argc > 2 ? argv[2] : "/tmp/kiln_folder_bench_cache";
  fs::remove_all(root);
  fs::remove_all(cache);
  std::vector<std::uint8_t> img(3 * 64 * 64);
  for (int i = 0; i < 2000; ++i) {
    for (std::size_t k = 0; k < img.size(); ++k)
      img[k] = static_cast<std::uint8_t>((k * 7 + static_cast<std::size_t>(i) * 13 + (k / 64) * static_cast<std::size_t>(i % 5)) % 256);
    const fs::path dir = root / (i < 1600 ? "train" : "test") / fmt::format("c{}", i % 4);
    fs::create_directories(dir);
    const fs::path file = dir / fmt::format("{}.{}", i, i % 2 ? "jpg" : "png");
    if (i % 2) kiln::test::write_jpeg(file.string(), img.data(), 3, 64, 64);
    else kiln::test::write_png(file.string(), img.data(), 3, 64, 64);
  }
  kiln::LoadOptions o;
  o.sample = kiln::Shape::chw(3, 32, 32);
  o.cache_dir = cache.string();
  const char* runs[] = {"no cache", "cold cache (decode + write)", "warm cache"};
  for (int run = 0; run < 3; ++run) {
    o.no_cache = run == 0;
    const auto start = std::chrono::steady_clock::now();
    const kiln::Splits s = kiln::load_data(root.string(), o);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto n = static_cast<double>(s.train.size() + s.test.size());
    std::printf("%-28s %.0f images in %.3f s: %.0f images/s\n", runs[run], n, sec, n / sec);
  }
  return 0;
}
