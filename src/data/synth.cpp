// The synthetic CIFAR-format set and the CIFAR-10 binary writer.
//
// Each class is a family of patterns, not a template: shape, colours, position, scale,
// rotation, phase, background gradient, clutter, occluders and noise are all drawn per
// image, and foreground and background colours come from the same distribution for every
// class, so a network has to learn shape and texture (colour, brightness and position carry
// no label information). An image is a pure function of (seed, split, index), which keeps
// the set reproducible in any thread order and makes train and test disjoint streams.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <numbers>

#include "kiln/data.hpp"
#include "kiln/error.hpp"
#include "math/rng.hpp"

namespace kiln {

namespace fs = std::filesystem;

namespace {

constexpr int kSide = 32;
constexpr int kPixels = kSide * kSide;
constexpr int kClasses = 10;
constexpr std::array<const char*, kClasses> kClassNames = {"disc",     "ring", "square",   "hstripes", "vstripes",
                                                           "dstripes", "plus", "triangle", "checker",  "blob"};
// Noise draws live far above the shape draws in an image's stream so that adding a shape
// parameter never shifts the noise.
constexpr std::uint64_t kNoiseCounter = 1ull << 32;
constexpr float kPi = std::numbers::pi_v<float>;

// Sequential draws from one image's stream.
struct Draw {
  std::uint64_t key;
  std::uint64_t counter = 0;

  std::uint64_t bits() { return math::random_u64(key, counter++); }
  float uniform() { return math::random_uniform(key, counter++); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  int below(int n) { return static_cast<int>(math::random_below(key, counter++, static_cast<std::uint32_t>(n))); }
  bool chance(float p) { return uniform() < p; }
};

struct Rgb {
  float r = 0, g = 0, b = 0;
};

Rgb random_colour(Draw& d) { return {d.uniform(0, 255), d.uniform(0, 255), d.uniform(0, 255)}; }

float distance(Rgb a, Rgb b) { return std::sqrt((a.r - b.r) * (a.r - b.r) + (a.g - b.g) * (a.g - b.g) + (a.b - b.b) * (a.b - b.b)); }

// A colour at least `min_distance` from `other` (RGB, 0..255); low-contrast images stay
// possible but rare, which keeps the set from being solvable at 100%.
Rgb contrasting_colour(Draw& d, Rgb other, float min_distance) {
  Rgb c = random_colour(d);
  for (int tries = 0; tries < 8 && distance(c, other) < min_distance; ++tries) c = random_colour(d);
  return c;
}

// Where a pattern sits: centre, rotation and anisotropy. local() maps a pixel centre into
// the pattern's own coordinates, in pixels.
struct Frame {
  float cx = 16, cy = 16, cos_t = 1, sin_t = 0, aspect = 1;

  static Frame random(Draw& d, float margin, float max_aspect) {
    Frame f;
    f.cx = d.uniform(margin, kSide - margin);
    f.cy = d.uniform(margin, kSide - margin);
    float theta = d.uniform(0, 2 * kPi);
    f.cos_t = std::cos(theta);
    f.sin_t = std::sin(theta);
    f.aspect = d.uniform(1.0f, max_aspect);
    return f;
  }
  void local(float px, float py, float& u, float& v) const {
    float dx = px - cx, dy = py - cy;
    u = (dx * cos_t + dy * sin_t) * aspect;
    v = (-dx * sin_t + dy * cos_t) / aspect;
  }
};

float length(float u, float v) { return std::sqrt(u * u + v * v); }

// Antialiased coverage from a signed distance in pixels (negative inside).
float cover(float sd) { return std::clamp(0.5f - sd, 0.0f, 1.0f); }

float sd_box(float u, float v, float hu, float hv) {
  float qu = std::abs(u) - hu, qv = std::abs(v) - hv;
  float outside = length(std::max(qu, 0.0f), std::max(qv, 0.0f));
  return outside + std::min(std::max(qu, qv), 0.0f);
}

// Equilateral triangle of half-side r centred on its centroid (Inigo Quilez's formula).
float sd_triangle(float u, float v, float r) {
  const float k = std::sqrt(3.0f);
  u = std::abs(u) - r;
  v = v + r / k;
  if (u + k * v > 0) {
    float nu = (u - k * v) / 2, nv = (-k * u - v) / 2;
    u = nu;
    v = nv;
  }
  u -= std::clamp(u, -2 * r, 0.0f);
  float len = length(u, v);
  return v > 0 ? -len : len;
}

// Parallel bands of `period` pixels across direction `t`, half of each covered.
float stripes(float t, float period, float phase) {
  float s = t / period + phase;
  s -= std::floor(s);
  return cover((std::abs(s - 0.5f) - 0.25f) * period);
}

struct Canvas {
  std::array<float, 3 * kPixels> px{};

  // Blends `colour` in by coverage(x, y) at pixel centres within `reach` of (cx, cy).
  template <class Coverage>
  void paint(Rgb colour, Coverage&& coverage, float cx = 16, float cy = 16, float reach = kSide) {
    int y0 = std::max(0, static_cast<int>(cy - reach)), y1 = std::min(kSide, static_cast<int>(cy + reach) + 1);
    int x0 = std::max(0, static_cast<int>(cx - reach)), x1 = std::min(kSide, static_cast<int>(cx + reach) + 1);
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) {
        float a = coverage(static_cast<float>(x) + 0.5f, static_cast<float>(y) + 0.5f);
        if (a <= 0) continue;
        int i = y * kSide + x;
        px[i] += a * (colour.r - px[i]);
        px[kPixels + i] += a * (colour.g - px[kPixels + i]);
        px[2 * kPixels + i] += a * (colour.b - px[2 * kPixels + i]);
      }
  }
};

// A two-colour linear gradient, so the background is never a flat colour to subtract.
void paint_background(Canvas& canvas, Draw& d, Rgb bg) {
  Rgb far{std::clamp(bg.r + d.uniform(-50, 50), 0.0f, 255.0f), std::clamp(bg.g + d.uniform(-50, 50), 0.0f, 255.0f),
          std::clamp(bg.b + d.uniform(-50, 50), 0.0f, 255.0f)};
  float angle = d.uniform(0, 2 * kPi);
  float gx = std::cos(angle) / kSide, gy = std::sin(angle) / kSide;
  for (int y = 0; y < kSide; ++y)
    for (int x = 0; x < kSide; ++x) {
      float t = std::clamp(0.5f + (static_cast<float>(x) - 16) * gx + (static_cast<float>(y) - 16) * gy, 0.0f, 1.0f);
      int i = y * kSide + x;
      canvas.px[i] = bg.r + t * (far.r - bg.r);
      canvas.px[kPixels + i] = bg.g + t * (far.g - bg.g);
      canvas.px[2 * kPixels + i] = bg.b + t * (far.b - bg.b);
    }
}

// Small dots, specks and short strokes: too small to be any class's pattern, but they put
// edges and colour in the image that the network must learn to ignore. Sometimes in the
// foreground colour.
void paint_clutter(Canvas& canvas, Draw& d, Rgb fg, int count) {
  for (int k = 0; k < count; ++k) {
    Rgb colour = d.chance(0.3f) ? fg : random_colour(d);
    Frame f = Frame::random(d, 1, 1);
    int kind = d.below(3);
    float a = d.uniform(0.8f, 2.2f), b = d.uniform(2.5f, 6.0f);
    if (kind == 0)
      canvas.paint(
          colour, [&](float x, float y) { return cover(length(x - f.cx, y - f.cy) - a); }, f.cx, f.cy, a + 2);
    else if (kind == 1)
      canvas.paint(
          colour,
          [&](float x, float y) {
            float u, v;
            f.local(x, y, u, v);
            return cover(sd_box(u, v, a, a));
          },
          f.cx, f.cy, 1.5f * a + 2);
    else
      canvas.paint(
          colour,
          [&](float x, float y) {
            float u, v;
            f.local(x, y, u, v);
            return cover(sd_box(u, v, b, 0.6f));
          },
          f.cx, f.cy, b + 2);
  }
}

// A bar across part of the pattern, drawn on top of it.
void paint_occluder(Canvas& canvas, Draw& d) {
  Rgb colour = random_colour(d);
  Frame f = Frame::random(d, 6, 1);
  float half_length = d.uniform(4, 10), half_width = d.uniform(0.8f, 2.2f);
  canvas.paint(
      colour,
      [&](float x, float y) {
        float u, v;
        f.local(x, y, u, v);
        return cover(sd_box(u, v, half_length, half_width));
      },
      f.cx, f.cy, half_length + half_width + 2);
}

// A window (disc or square) that textured classes fill with their pattern.
float window(const Frame& f, bool round, float r, float x, float y) {
  float u, v;
  f.local(x, y, u, v);
  return cover(round ? length(u, v) - r : sd_box(u, v, r, r));
}

void paint_pattern(Canvas& canvas, Draw& d, int label, Rgb fg) {
  float r = d.uniform(5.5f, 12.0f);
  Frame f = Frame::random(d, 9, 1.25f);
  switch (label) {
    case 0:  // disc
      canvas.paint(fg, [&](float x, float y) {
        float u, v;
        f.local(x, y, u, v);
        return cover(length(u, v) - r);
      });
      break;
    case 1: {  // ring
      float w = d.uniform(1.6f, std::max(2.0f, 0.45f * r));
      canvas.paint(fg, [&](float x, float y) {
        float u, v;
        f.local(x, y, u, v);
        return cover(std::abs(length(u, v) - r + w / 2) - w / 2);
      });
      break;
    }
    case 2: {  // square outline
      float h = 0.85f * r, w = d.uniform(1.6f, std::max(2.0f, 0.4f * h));
      canvas.paint(fg, [&](float x, float y) {
        float u, v;
        f.local(x, y, u, v);
        return cover(std::abs(sd_box(u, v, h - w / 2, h - w / 2)) - w / 2);
      });
      break;
    }
    case 3:
    case 4:
    case 5: {  // stripes: horizontal, vertical, diagonal (either way), in a window
      float base = label == 3 ? 0.0f : label == 4 ? 90.0f : (d.chance(0.5f) ? 45.0f : -45.0f);
      float angle = (base + d.uniform(-14, 14)) * kPi / 180;
      float nx = -std::sin(angle), ny = std::cos(angle);
      float period = d.uniform(3.5f, 7.5f), phase = d.uniform();
      bool round = d.chance(0.5f);
      float wr = r + 3;
      canvas.paint(fg, [&](float x, float y) {
        float w = window(f, round, wr, x, y);
        return w > 0 ? w * stripes((x - f.cx) * nx + (y - f.cy) * ny, period, phase) : 0.0f;
      });
      break;
    }
    case 6: {  // plus
      float w = d.uniform(2.0f, std::max(2.5f, 0.5f * r)) / 2;
      canvas.paint(fg, [&](float x, float y) {
        float u, v;
        f.local(x, y, u, v);
        return cover(std::min(sd_box(u, v, r, w), sd_box(u, v, w, r)));
      });
      break;
    }
    case 7:  // filled triangle
      canvas.paint(fg, [&](float x, float y) {
        float u, v;
        f.local(x, y, u, v);
        return cover(sd_triangle(u, v, 1.1f * r));
      });
      break;
    case 8: {  // checkerboard in a window
      float cell = d.uniform(2.8f, 5.5f);
      bool round = d.chance(0.5f);
      float wr = r + 3;
      canvas.paint(fg, [&](float x, float y) {
        float w = window(f, round, wr, x, y);
        if (w <= 0) return 0.0f;
        float u, v;
        f.local(x, y, u, v);
        float a = u / cell, b = v / cell;
        float edge = std::min(std::abs(a - std::round(a)), std::abs(b - std::round(b))) * cell;
        bool on = ((static_cast<int>(std::floor(a)) + static_cast<int>(std::floor(b))) & 1) != 0;
        return w * (on ? 0.5f + std::min(edge, 0.5f) : 0.5f - std::min(edge, 0.5f));
      });
      break;
    }
    default: {  // blob: a soft radial gradient, a disc without an edge
      float sigma = 0.55f * r;
      canvas.paint(fg, [&](float x, float y) {
        float u, v;
        f.local(x, y, u, v);
        return std::exp(-(u * u + v * v) / (2 * sigma * sigma));
      });
      break;
    }
  }
}

// Approximately normal: Irwin-Hall of four 16-bit uniforms, one 64-bit draw.
float normal(std::uint64_t bits) {
  float sum = 0;
  for (int k = 0; k < 4; ++k) sum += static_cast<float>((bits >> (16 * k)) & 0xFFFF) * (1.0f / 65536.0f);
  return (sum - 2.0f) * std::sqrt(3.0f);
}

void render(std::uint64_t key, int label, std::uint8_t* out) {
  Draw d{key};
  Canvas canvas;
  Rgb bg = random_colour(d);
  Rgb fg = contrasting_colour(d, bg, 90);
  paint_background(canvas, d, bg);
  paint_clutter(canvas, d, fg, d.below(5));
  paint_pattern(canvas, d, label, fg);
  if (d.chance(0.3f)) paint_occluder(canvas, d);
  // Per-channel noise plus a shared luminance part, of a strength drawn per image.
  float sigma = d.uniform(4, 22);
  Draw noise{key, kNoiseCounter};
  for (int i = 0; i < kPixels; ++i) {
    float shared = 0.5f * normal(noise.bits());
    for (int c = 0; c < 3; ++c) {
      float v = canvas.px[c * kPixels + i] + sigma * (shared + 0.85f * normal(noise.bits()));
      out[c * kPixels + i] = static_cast<std::uint8_t>(std::clamp(std::lround(v), 0l, 255l));
    }
  }
}

// Labels come in blocks of ten holding each class once, in a random order: every class has
// size/10 images (+1 for some when size is not a multiple of ten), with no periodic pattern.
std::uint8_t label_of(std::uint64_t split_key, std::int64_t index) {
  std::uint64_t block_key = math::random_u64(split_key, static_cast<std::uint64_t>(index / kClasses) ^ (1ull << 62));
  std::array<std::uint8_t, kClasses> perm{};
  for (int i = 0; i < kClasses; ++i) perm[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
  for (int i = kClasses - 1; i > 0; --i) {
    auto j = math::random_below(block_key, static_cast<std::uint64_t>(i), static_cast<std::uint32_t>(i + 1));
    std::swap(perm[static_cast<std::size_t>(i)], perm[j]);
  }
  return perm[static_cast<std::size_t>(index % kClasses)];
}

Dataset make_split(const SynthOptions& options, std::uint64_t split, std::int64_t count, const char* name) {
  if (count < 0) throw UsageError(fmt::format("synthetic set: {} count must not be negative (got {})", name, count));
  Dataset out;
  out.source = fmt::format("synthetic CIFAR-10 ({}, seed {})", name, options.seed);
  out.class_names.assign(kClassNames.begin(), kClassNames.end());
  out.labels.resize(static_cast<std::size_t>(count));
  out.images.resize(static_cast<std::size_t>(count * kPixels * 3));
  std::uint64_t split_key = math::stream_key(options.seed, math::kStreamSynth, split);
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < count; ++i) {
    std::uint8_t label = label_of(split_key, i);
    out.labels[static_cast<std::size_t>(i)] = label;
    render(math::random_u64(split_key, static_cast<std::uint64_t>(i)), label, out.images.data() + i * kPixels * 3);
  }
  return out;
}

// Writes `bytes` to `path` through a temporary file in the same directory, fsynced and
// renamed over the target, so a crash leaves either the old file or the new one.
void write_atomically(const fs::path& path, const std::string& bytes) {
  std::string target = path.string();
  std::string tmpl = (path.parent_path() / fmt::format(".{}.XXXXXX", path.filename().string())).string();
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) throw DataError(target, -1, fmt::format("{}: cannot create a temporary file: {}", target, std::strerror(errno)));
  auto fail = [&](const char* what) {
    int err = errno;
    ::close(fd);
    ::unlink(tmpl.c_str());
    throw DataError(target, -1, fmt::format("{}: {}: {}", target, what, std::strerror(err)));
  };
  const char* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write failed");
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fchmod(fd, 0644) != 0) fail("cannot set permissions");
  if (::fsync(fd) != 0) fail("fsync failed");
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmpl.c_str());
    throw DataError(target, -1, fmt::format("{}: close failed: {}", target, std::strerror(err)));
  }
  if (::rename(tmpl.c_str(), target.c_str()) != 0) {
    int err = errno;
    ::unlink(tmpl.c_str());
    throw DataError(target, -1, fmt::format("{}: cannot rename the temporary file into place: {}", target, std::strerror(err)));
  }
}

// The records [first, first + count) of a split as CIFAR-10 binary.
std::string records(const Dataset& data, std::int64_t first, std::int64_t count) {
  const std::int64_t pixels = cifar10_record_bytes - 1;
  std::string out(static_cast<std::size_t>(count * cifar10_record_bytes), '\0');
  for (std::int64_t r = 0; r < count; ++r) {
    char* rec = out.data() + r * cifar10_record_bytes;
    rec[0] = static_cast<char>(data.labels[static_cast<std::size_t>(first + r)]);
    std::memcpy(rec + 1, data.image(first + r), static_cast<std::size_t>(pixels));
  }
  return out;
}

// One output file: the records [first, first + count) of a split.
struct Part {
  fs::path file;
  const Dataset* data;
  const char* split;
  std::int64_t first;
  std::int64_t count;
};

// Refuses, before any file is written, what load_cifar10 would reject, naming the file and
// the record as the reader would.
void check_part(const Part& part) {
  const Dataset& data = *part.data;
  std::string file = part.file.string();
  if (data.sample != Shape::chw(3, 32, 32))
    throw DataError(file, -1,
                    fmt::format("{}: the {} split has samples of {}; CIFAR-10 binary records hold 3x32x32 images", file,
                                part.split, data.sample.str()));
  if (static_cast<std::int64_t>(data.images.size()) != data.size() * data.sample.elements())
    throw DataError(file, -1,
                    fmt::format("{}: the {} split has {} labels but {} image bytes (expected {} per image)", file, part.split,
                                data.size(), data.images.size(), data.sample.elements()));
  if (part.count == 0)
    throw DataError(file, -1,
                    fmt::format("{}: would be empty: the {} split has {} images, too few to give every file one "
                                "(load_cifar10 rejects empty batch files)",
                                file, part.split, data.size()));
  for (std::int64_t r = 0; r < part.count; ++r) {
    std::uint8_t label = data.labels[static_cast<std::size_t>(part.first + r)];
    if (label >= 10)
      throw DataError(file, r,
                      fmt::format("{}: record {} ({} image {}) has label {}; CIFAR-10 labels are 0..9", file, r, part.split,
                                  part.first + r, label));
  }
}

}  // namespace

Cifar10 make_synthetic_cifar10(const SynthOptions& options) {
  Cifar10 data;
  data.train = make_split(options, 0, options.train, "train");
  data.test = make_split(options, 1, options.test, "test");
  return data;
}

void write_cifar10(const Cifar10& data, const std::string& dir) {
  const fs::path root(dir);
  constexpr int kTrainFiles = 5;
  std::vector<Part> parts;
  std::int64_t n = data.train.size(), first = 0;
  for (int k = 0; k < kTrainFiles; ++k) {
    std::int64_t count = n / kTrainFiles + (k < n % kTrainFiles ? 1 : 0);
    parts.push_back({root / fmt::format("data_batch_{}.bin", k + 1), &data.train, "train", first, count});
    first += count;
  }
  parts.push_back({root / "test_batch.bin", &data.test, "test", 0, data.test.size()});
  for (const Part& part : parts) check_part(part);

  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec || !fs::is_directory(root))
    throw DataError(dir, -1,
                    fmt::format("{}: cannot create the directory: {}", dir,
                                ec ? ec.message() : std::string("a file of that name exists")));

  for (const Part& part : parts) write_atomically(part.file, records(*part.data, part.first, part.count));
  std::string meta;
  for (const auto& name : data.train.class_names) meta += name + "\n";
  write_atomically(root / "batches.meta.txt", meta);
  // The renames are durable only once the directory itself is on disk.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace kiln
