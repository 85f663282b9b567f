// The synthetic sets: CIFAR-10's, and in the shapes and classes of CIFAR-100, MNIST and
// Fashion-MNIST.
//
// Each class is a family of patterns, not a template: shape, colours, position, scale,
// rotation, phase, background gradient, clutter, occluders and noise are all drawn per
// image, and foreground and background colours come from the same distribution for every
// class, so a network has to learn shape and texture (colour, brightness and position carry
// no label information). An image is a pure function of (seed, split, index), which keeps
// the set reproducible in any thread order and makes train and test disjoint streams.
//
// MNIST and Fashion-MNIST: the same ten pattern families, in grey levels (foreground and
// background at least 52 levels apart), drawn at 32x32 and area-resampled to 28x28.
// CIFAR-100: each fine class is a pattern family and one of ten foreground hues (red ..
// magenta); here the colour carries label information by design, the shape still has to be
// learnt for the family. The fine classes are numbered so that the official superclass
// mapping (kCifar100Coarse) groups them coherently: superclass s is family s / 2 in the
// hues 0..4 (s even) or 5..9 (s odd), so writing the set as CIFAR-100 gives coarse labels
// that are learnable too.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fmt/format.h>
#include <numbers>

#include "data/data_files.hpp"
#include "kiln/data.hpp"
#include "kiln/error.hpp"
#include "math/rng.hpp"

namespace kiln {


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
  bool grey = false;  // every colour drawn is a grey level (the same three draws as a colour)

  std::uint64_t bits() { return math::random_u64(key, counter++); }
  float uniform() { return math::random_uniform(key, counter++); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  int below(int n) { return static_cast<int>(math::random_below(key, counter++, static_cast<std::uint32_t>(n))); }
  bool chance(float p) { return uniform() < p; }
};

struct Rgb {
  float r = 0, g = 0, b = 0;
};

Rgb random_colour(Draw& d) {
  Rgb c{d.uniform(0, 255), d.uniform(0, 255), d.uniform(0, 255)};
  if (d.grey) c.g = c.b = c.r;
  return c;
}

constexpr int kHues = 10;
constexpr std::array<const char*, kHues> kHueNames = {"red",  "orange", "yellow", "lime",   "green",
                                                      "cyan", "azure",  "blue",   "violet", "magenta"};

// A saturated, bright colour of hue `hue` (0..9, 36 degrees apart), slightly varied.
Rgb hue_colour(Draw& d, int hue) {
  float h = (static_cast<float>(hue) + d.uniform(-0.15f, 0.15f)) * 6.0f / kHues;
  h -= 6.0f * std::floor(h / 6.0f);
  float value = d.uniform(200, 255), saturation = d.uniform(0.8f, 1.0f);
  float chroma = value * saturation, low = value - chroma;
  float x = chroma * (1 - std::abs(std::fmod(h, 2.0f) - 1));
  Rgb c;
  switch (static_cast<int>(h)) {
    case 0: c = {chroma, x, 0}; break;
    case 1: c = {x, chroma, 0}; break;
    case 2: c = {0, chroma, x}; break;
    case 3: c = {0, x, chroma}; break;
    case 4: c = {x, 0, chroma}; break;
    default: c = {chroma, 0, x}; break;
  }
  return {c.r + low, c.g + low, c.b + low};
}

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

// What a class looks like: a pattern family, in a fixed hue or (hue < 0) any colour.
struct Look {
  int family = 0;
  int hue = -1;
};

// Resamples a 32x32 plane to 28x28 by area: each output pixel averages the 8/7 x 8/7 source
// pixels under it.
void area_resample_28(const float* in, std::uint8_t* out) {
  constexpr int kOut = 28;
  constexpr float kScale = static_cast<float>(kSide) / kOut;
  std::array<float, kOut * kSide> rows{};  // resampled along y first
  for (int y = 0; y < kOut; ++y) {
    float lo = static_cast<float>(y) * kScale, hi = lo + kScale;
    for (int sy = static_cast<int>(lo); sy < kSide && static_cast<float>(sy) < hi; ++sy) {
      float w = std::min(hi, static_cast<float>(sy + 1)) - std::max(lo, static_cast<float>(sy));
      for (int x = 0; x < kSide; ++x) rows[static_cast<std::size_t>(y * kSide + x)] += w * in[sy * kSide + x];
    }
  }
  for (int y = 0; y < kOut; ++y)
    for (int x = 0; x < kOut; ++x) {
      float lo = static_cast<float>(x) * kScale, hi = lo + kScale, sum = 0;
      for (int sx = static_cast<int>(lo); sx < kSide && static_cast<float>(sx) < hi; ++sx)
        sum += (std::min(hi, static_cast<float>(sx + 1)) - std::max(lo, static_cast<float>(sx))) *
               rows[static_cast<std::size_t>(y * kSide + sx)];
      out[y * kOut + x] = static_cast<std::uint8_t>(std::clamp(std::lround(sum / (kScale * kScale)), 0l, 255l));
    }
}

// One image of `look` into `out`: 3x32x32 bytes, or 1x28x28 in grey levels when `grey`.
void render(std::uint64_t key, Look look, bool grey, std::uint8_t* out) {
  Draw d{key};
  d.grey = grey;
  Canvas canvas;
  Rgb bg, fg;
  if (look.hue < 0) {
    bg = random_colour(d);
    fg = contrasting_colour(d, bg, 90);
  } else {
    fg = hue_colour(d, look.hue);
    bg = contrasting_colour(d, fg, 90);
  }
  paint_background(canvas, d, bg);
  paint_clutter(canvas, d, fg, d.below(5));
  paint_pattern(canvas, d, look.family, fg);
  if (d.chance(0.3f)) paint_occluder(canvas, d);
  // Per-channel noise plus a shared luminance part, of a strength drawn per image.
  float sigma = d.uniform(4, 22);
  Draw noise{key, kNoiseCounter};
  if (grey) {
    std::array<float, kPixels> plane{};
    for (int i = 0; i < kPixels; ++i) plane[static_cast<std::size_t>(i)] = canvas.px[i] + sigma * normal(noise.bits());
    area_resample_28(plane.data(), out);
    return;
  }
  for (int i = 0; i < kPixels; ++i) {
    float shared = 0.5f * normal(noise.bits());
    for (int c = 0; c < 3; ++c) {
      float v = canvas.px[c * kPixels + i] + sigma * (shared + 0.85f * normal(noise.bits()));
      out[c * kPixels + i] = static_cast<std::uint8_t>(std::clamp(std::lround(v), 0l, 255l));
    }
  }
}

constexpr int kMaxClasses = 100;

// Labels come in blocks of `classes` holding each class once, in a random order: every class
// has size/classes images (+1 for some when size is not a multiple), with no periodic pattern.
std::uint8_t label_of(std::uint64_t split_key, std::int64_t index, int classes) {
  std::uint64_t block_key = math::random_u64(split_key, static_cast<std::uint64_t>(index / classes) ^ (1ull << 62));
  std::array<std::uint8_t, kMaxClasses> perm{};
  for (int i = 0; i < classes; ++i) perm[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
  for (int i = classes - 1; i > 0; --i) {
    auto j = math::random_below(block_key, static_cast<std::uint64_t>(i), static_cast<std::uint32_t>(i + 1));
    std::swap(perm[static_cast<std::size_t>(i)], perm[j]);
  }
  return perm[static_cast<std::size_t>(index % classes)];
}

// The family and hue of each synthetic CIFAR-100 fine class: superclass s (the official
// mapping) is family s / 2, its five fine classes (in order) the hues (s % 2) * 5 + 0..4.
std::array<Look, 100> cifar100_looks() {
  std::array<Look, 100> looks{};
  std::array<int, 20> seen{};
  for (int fine = 0; fine < 100; ++fine) {
    int coarse = detail::kCifar100Coarse[fine];
    looks[static_cast<std::size_t>(fine)] = {coarse / 2, (coarse % 2) * 5 + seen[static_cast<std::size_t>(coarse)]++};
  }
  return looks;
}

// What a synthetic set of `format` is: its samples, classes and names, and how a label looks.
struct Kind {
  DataFormat format;
  const char* title;
  Shape sample;
  int classes;
  std::vector<std::string> class_names;
  std::array<Look, 100> looks;
};

Kind kind_of(DataFormat format) {
  Kind kind{format, "CIFAR-10", Shape::chw(3, 32, 32), kClasses, {kClassNames.begin(), kClassNames.end()}, {}};
  for (int c = 0; c < kClasses; ++c) kind.looks[static_cast<std::size_t>(c)] = {c, -1};
  if (format == DataFormat::folder)
    throw UsageError("there is no synthetic image folder: kiln synth writes cifar10, cifar100, mnist or fashion-mnist");
  switch (format) {
    case DataFormat::cifar10:
    case DataFormat::folder: break;
    case DataFormat::cifar100:
      kind.title = "CIFAR-100";
      kind.classes = 100;
      kind.looks = cifar100_looks();
      kind.class_names = detail::synthetic_cifar100_names(Cifar100Label::fine);
      break;
    case DataFormat::mnist:
    case DataFormat::fashion_mnist:
      // Named as the format's classes, so that the set reads back from its IDX files as written.
      kind.title = format == DataFormat::mnist ? "MNIST" : "Fashion-MNIST";
      kind.sample = Shape::chw(1, 28, 28);
      kind.class_names = detail::idx_class_names(format);
      break;
  }
  return kind;
}

Dataset make_split(const SynthOptions& options, const Kind& kind, std::uint64_t split, std::int64_t count, const char* name) {
  if (count < 0) throw UsageError(fmt::format("synthetic set: {} count must not be negative (got {})", name, count));
  Dataset out;
  out.source = fmt::format("synthetic {} ({}, seed {})", kind.title, name, options.seed);
  out.sample = kind.sample;
  out.classes = kind.classes;
  out.class_names = kind.class_names;
  const std::int64_t bytes = kind.sample.elements();
  const bool grey = kind.sample.c == 1;
  out.labels.resize(static_cast<std::size_t>(count));
  out.images.resize(static_cast<std::size_t>(count * bytes));
  // Each format its own streams (CIFAR-10's are those it always had).
  const std::uint64_t stream = split + 2 * static_cast<std::uint64_t>(kind.format);
  std::uint64_t split_key = math::stream_key(options.seed, math::kStreamSynth, stream);
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < count; ++i) {
    std::uint8_t label = label_of(split_key, i, kind.classes);
    out.labels[static_cast<std::size_t>(i)] = label;
    render(math::random_u64(split_key, static_cast<std::uint64_t>(i)), kind.looks[label], grey,
           out.images.data() + i * bytes);
  }
  return out;
}

}  // namespace

namespace detail {

std::vector<std::string> synthetic_cifar100_names(Cifar100Label label) {
  std::vector<std::string> names;
  if (label == Cifar100Label::coarse) {
    for (int s = 0; s < 20; ++s)
      names.push_back(fmt::format("{}-{}", kClassNames[static_cast<std::size_t>(s / 2)], s % 2 == 0 ? "red-to-green" : "cyan-to-magenta"));
    return names;
  }
  for (const Look& look : cifar100_looks())
    names.push_back(fmt::format("{}-{}", kClassNames[static_cast<std::size_t>(look.family)], kHueNames[static_cast<std::size_t>(look.hue)]));
  return names;
}

}  // namespace detail

Splits make_synthetic(const SynthOptions& options) {
  const Kind kind = kind_of(options.format);
  Splits data;
  data.format = options.format;
  data.train = make_split(options, kind, 0, options.train, "train");
  data.test = make_split(options, kind, 1, options.test, "test");
  return data;
}

Cifar10 make_synthetic_cifar10(const SynthOptions& options) {
  SynthOptions cifar10 = options;
  cifar10.format = DataFormat::cifar10;
  return make_synthetic(cifar10);
}

}  // namespace kiln
