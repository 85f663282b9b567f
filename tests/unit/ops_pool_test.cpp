// CPU maxpool, avgpool, global_maxpool, global_avgpool against a direct double-precision
// reference of PyTorch's max_pool2d / avg_pool2d (count_include_pad=True, ceil_mode) and
// adaptive pooling to 1x1, and against finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "math/pool.hpp"
#include "op_harness.hpp"

namespace kiln::test {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// op_harness's expect_close lets a NaN through (a NaN error never exceeds the bound), and
// these tests poison unused buffers with NaN: require NaN exactly where the reference has it.
void expect_matches(const std::vector<double>& ref, const float* got, double atol, double rtol, const std::string& what) {
  for (std::size_t i = 0; i < ref.size(); ++i)
    if (std::isnan(got[i]) != std::isnan(ref[i])) {
      ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", reference " << ref[i];
      return;
    }
  expect_close(ref, got, atol, rtol, what);
}

struct PoolCase {
  const char* what;
  std::int64_t c, h, w;
  Hw kernel, stride, pad;
  bool ceil;
};

const PoolCase kCases[] = {
    {"3x3 s2 p1 ceil, non-square input", 2, 7, 9, {3, 3}, {2, 2}, {1, 1}, true},
    {"cifar_quick 3/2 ceil on 16x16", 3, 16, 16, {3, 3}, {2, 2}, {0, 0}, true},
    {"cifar_quick 3/2 ceil on 8x8", 3, 8, 8, {3, 3}, {2, 2}, {0, 0}, true},
    {"2x2 s2 floor", 2, 8, 8, {2, 2}, {2, 2}, {0, 0}, false},
    {"3x2 kernel, stride 1x2 < kernel, pad 1x0, floor", 2, 6, 5, {3, 2}, {1, 2}, {1, 0}, false},
    {"stride 3 > kernel 2, floor", 2, 8, 7, {2, 2}, {3, 3}, {0, 0}, false},
    {"stride 3 > kernel 2, ceil", 2, 8, 7, {2, 2}, {3, 3}, {0, 0}, true},
    {"2x3 kernel, stride 3x2, pad 1x1, ceil", 2, 7, 6, {2, 3}, {3, 2}, {1, 1}, true},
    {"3x3 s2 p1 floor", 1, 9, 9, {3, 3}, {2, 2}, {1, 1}, false},
};

Graph pool_graph(bool max, const PoolCase& c) {
  LayerDef def = max ? layers::maxpool(c.kernel) : layers::avgpool(c.kernel);
  def.stride(c.stride).pad(Padding::hw(c.pad.h, c.pad.w)).ceil(c.ceil).named("p");
  GraphBuilder b("t", Shape::chw(c.c, c.h, c.w), 10);
  b.add(def).add(layers::flatten()).add(layers::linear(10));
  return b.build();
}

// PyTorch's pooling_output_shape, written out again here.
std::int64_t ref_out(std::int64_t size, std::int64_t k, std::int64_t s, std::int64_t pad, bool ceil) {
  std::int64_t span = size + 2 * pad - k;
  std::int64_t out = (ceil ? (span + s - 1) / s : span / s) + 1;
  if (ceil && (out - 1) * s >= size + pad) --out;
  return out;
}

struct Ref {
  std::vector<double> y, dx;
};

// PyTorch's CPU loops: window [start, min(start + k, size + pad)) is the divisor, then
// clipped to the input; max takes the first strictly greater value in row-major order.
Ref pool_ref(bool max, const PoolCase& c, std::int64_t n, const std::vector<float>& x, const std::vector<float>& dy) {
  const std::int64_t oh = ref_out(c.h, c.kernel.h, c.stride.h, c.pad.h, c.ceil);
  const std::int64_t ow = ref_out(c.w, c.kernel.w, c.stride.w, c.pad.w, c.ceil);
  Ref r{std::vector<double>(static_cast<std::size_t>(n * c.c * oh * ow)), std::vector<double>(x.size())};
  for (std::int64_t p = 0; p < n * c.c; ++p)
    for (std::int64_t i = 0; i < oh; ++i)
      for (std::int64_t j = 0; j < ow; ++j) {
        std::int64_t h0 = i * c.stride.h - c.pad.h, w0 = j * c.stride.w - c.pad.w;
        std::int64_t h1 = std::min(h0 + c.kernel.h, c.h + c.pad.h), w1 = std::min(w0 + c.kernel.w, c.w + c.pad.w);
        const double divisor = static_cast<double>((h1 - h0) * (w1 - w0));
        h0 = std::max<std::int64_t>(h0, 0), w0 = std::max<std::int64_t>(w0, 0);
        h1 = std::min(h1, c.h), w1 = std::min(w1, c.w);
        const auto o = static_cast<std::size_t>((p * oh + i) * ow + j);
        double best = -INFINITY, sum = 0;
        std::size_t arg = 0;
        for (std::int64_t yy = h0; yy < h1; ++yy)
          for (std::int64_t xx = w0; xx < w1; ++xx) {
            const auto e = static_cast<std::size_t>((p * c.h + yy) * c.w + xx);
            sum += x[e];
            if (x[e] > best) best = x[e], arg = e;
          }
        if (max) {
          r.y[o] = best;
          r.dx[arg] += dy[o];
        } else {
          r.y[o] = sum / divisor;
          for (std::int64_t yy = h0; yy < h1; ++yy)
            for (std::int64_t xx = w0; xx < w1; ++xx) r.dx[static_cast<std::size_t>((p * c.h + yy) * c.w + xx)] += dy[o] / divisor;
        }
      }
  return r;
}

// Backward must overwrite dx (even when it holds NaN), add into it with accumulate, and
// leave it alone when it is null.
void expect_grad_paths(OpHarness& h, const std::vector<double>& ref, double atol, double rtol) {
  h.bind();
  std::fill(h.dx[0].begin(), h.dx[0].end(), kNaN);
  h.backward();
  expect_matches(ref, h.dx[0].data(), atol, rtol, "dx");

  std::vector<float> before = h.random(static_cast<std::int64_t>(h.dx[0].size()));
  std::copy(before.begin(), before.end(), h.dx[0].begin());
  h.cpu.accumulate[0] = true;
  h.backward();
  // What a float += of the reference gives (exact where the gradient is a copy).
  std::vector<double> sum(ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) sum[i] = before[i] + static_cast<float>(ref[i]);
  expect_matches(sum, h.dx[0].data(), atol, rtol, "accumulated dx");

  h.bind();
  std::fill(h.dx[0].begin(), h.dx[0].end(), 7.0f);
  h.cpu.dx[0] = nullptr;
  h.backward();
  EXPECT_TRUE(std::all_of(h.dx[0].begin(), h.dx[0].end(), [](float v) { return v == 7.0f; })) << "null dx was written";
  h.bind();
}

void check_case(bool max, const PoolCase& c) {
  SCOPED_TRACE(std::string(max ? "maxpool " : "avgpool ") + c.what);
  const std::int64_t n = 2;
  OpHarness h(pool_graph(max, c), "p", n);
  const Shape& out = h.layer().shape;
  ASSERT_EQ(out, Shape::chw(c.c, ref_out(c.h, c.kernel.h, c.stride.h, c.pad.h, c.ceil),
                            ref_out(c.w, c.kernel.w, c.stride.w, c.pad.w, c.ceil)));
  const Ref r = pool_ref(max, c, n, h.x[0], h.dy);
  h.forward();
  // Max copies an input value; avg divides a float sum of at most 9 values.
  expect_matches(r.y, h.y.data(), max ? 0.0 : 1e-6, max ? 0.0 : 1e-5, "y");
  if (!max) std::fill(h.x[0].begin(), h.x[0].end(), kNaN);  // avgpool's backward keeps nothing
  std::fill(h.y.begin(), h.y.end(), kNaN);                    // maxpool's is robust to y changed in place
  expect_grad_paths(h, r.dx, 1e-6, 1e-5);
}

TEST(OpsPool, MaxMatchesReference) {
  for (const PoolCase& c : kCases) check_case(true, c);
}

TEST(OpsPool, AvgMatchesReference) {
  for (const PoolCase& c : kCases) check_case(false, c);
}

// F.avg_pool2d(torch.ones(1, 1, 4, 4), 3, 2, 1, ceil_mode=True): windows [-1, 2), [1, 4),
// [3, 5) per axis divide by 3, 3, 2 (the last is cut at H + pad = 5) and read 2, 3, 1 ones.
TEST(OpsPool, AvgCeilDivisorByHand) {
  GraphBuilder b("t", Shape::chw(1, 4, 4), 10);
  b.add(layers::avgpool(3).stride(2).pad(1).ceil().named("p")).add(layers::flatten()).add(layers::linear(10));
  OpHarness h(b.build(), "p", 1);
  ASSERT_EQ(h.layer().shape, Shape::chw(1, 3, 3));
  std::fill(h.x[0].begin(), h.x[0].end(), 1.0f);
  h.forward();
  const double f[3] = {2.0 / 3.0, 1.0, 0.5};
  std::vector<double> want;
  for (double a : f)
    for (double b2 : f) want.push_back(a * b2);
  expect_matches(want, h.y.data(), 1e-7, 1e-6, "y");
  EXPECT_FLOAT_EQ(h.y[8], 0.25f);

  math::PoolSpan last = math::pool_span(2, 3, 2, 1, 4);
  EXPECT_EQ(last.begin, 3);
  EXPECT_EQ(last.end, 4);
  EXPECT_EQ(last.extent, 2);
}

// cifar_quick's pool2: 3/2 ceil on 16x16 gives 8x8, and its last row and column of windows
// start at 14 and read 2 rows (divisor 3 * 2, corner 2 * 2).
TEST(OpsPool, CifarQuickAvgpoolEdgeWindows) {
  GraphBuilder b("t", Shape::chw(1, 16, 16), 10);
  b.add(layers::avgpool(3).stride(2).ceil().named("p")).add(layers::flatten()).add(layers::linear(10));
  OpHarness h(b.build(), "p", 1);
  ASSERT_EQ(h.layer().shape, Shape::chw(1, 8, 8));
  std::iota(h.x[0].begin(), h.x[0].end(), 0.0f);  // x[r][c] = 16 r + c
  h.forward();
  EXPECT_FLOAT_EQ(h.y[7 * 8 + 7], (14 * 16 + 14 + 14 * 16 + 15 + 15 * 16 + 14 + 15 * 16 + 15) / 4.0f);
  EXPECT_FLOAT_EQ(h.y[0 * 8 + 7], (14 + 15 + 30 + 31 + 46 + 47) / 6.0f);
  EXPECT_FLOAT_EQ(h.y[0], (0 + 1 + 2 + 16 + 17 + 18 + 32 + 33 + 34) / 9.0f);
}

TEST(OpsPool, MaxTiesGoToTheFirstMaximum) {
  // A 2x2 window of equal values: all the gradient goes to its top-left element.
  GraphBuilder b1("t", Shape::chw(1, 2, 2), 10);
  b1.add(layers::maxpool(2).named("p")).add(layers::flatten()).add(layers::linear(10));
  OpHarness one(b1.build(), "p", 1);
  one.x[0] = {3.0f, 3.0f, 3.0f, 3.0f};
  one.dy = {5.0f};
  one.bind();
  one.forward();
  one.backward();
  EXPECT_EQ(one.dx[0], (std::vector<float>{5.0f, 0.0f, 0.0f, 0.0f}));

  // Small integers tie often, across overlapping windows too.
  for (const PoolCase& c : kCases) {
    SCOPED_TRACE(c.what);
    OpHarness h(pool_graph(true, c), "p", 2);
    for (float& v : h.x[0]) v = std::floor(v);
    const Ref r = pool_ref(true, c, 2, h.x[0], h.dy);
    h.forward();
    expect_matches(r.y, h.y.data(), 0.0, 0.0, "y");
    expect_grad_paths(h, r.dx, 1e-6, 1e-5);
  }
}

TEST(OpsPool, MaxPropagatesNaN) {
  GraphBuilder b("t", Shape::chw(1, 2, 2), 10);
  b.add(layers::maxpool(2).named("p")).add(layers::flatten()).add(layers::linear(10));
  OpHarness h(b.build(), "p", 1);
  h.x[0] = {1.0f, kNaN, 2.0f, 0.0f};
  h.bind();
  h.forward();
  EXPECT_TRUE(std::isnan(h.y[0]));
  h.dy = {1.0f};
  h.bind();
  h.backward();
  EXPECT_EQ(h.dx[0][1], 1.0f);
  EXPECT_EQ(h.dx[0][0] + h.dx[0][2] + h.dx[0][3], 0.0f);
}

// dL/dx by central differences for a few elements. Max inputs are distinct values 0.05
// apart, so a perturbation of 0.01 never moves a maximum.
TEST(OpsPool, FiniteDifferences) {
  for (bool max : {true, false})
    for (const PoolCase& c : kCases) {
      SCOPED_TRACE(std::string(max ? "maxpool " : "avgpool ") + c.what);
      OpHarness h(pool_graph(max, c), "p", 2);
      if (max) {
        std::vector<float> v(h.x[0].size());
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.05f * static_cast<float>(i) - 2.0f;
        std::shuffle(v.begin(), v.end(), std::mt19937(7));
        h.x[0] = v;
        h.bind();
      }
      h.forward();
      h.backward();
      const std::vector<float> dx = h.dx[0];
      for (std::size_t e = 0; e < dx.size(); e += dx.size() / 7 + 1) {
        const double fd = h.numeric_grad(&h.x[0][e], 1e-2f);
        EXPECT_NEAR(dx[e], fd, 1e-3 + 1e-3 * std::fabs(fd)) << "element " << e;
      }
    }
}

TEST(OpsPool, DeterministicAcrossThreadCounts) {
  for (bool max : {true, false}) {
    std::vector<float> y[2], dx[2];
    for (int t = 0; t < 2; ++t) {
      OpHarness h(pool_graph(max, kCases[0]), "p", 3);
      h.cpu.threads = t == 0 ? 1 : 4;
      h.forward();
      h.backward();
      y[t] = h.y, dx[t] = h.dx[0];
    }
    EXPECT_EQ(y[0], y[1]);
    EXPECT_EQ(dx[0], dx[1]);
  }
}

// ---- global pooling -----------------------------------------------------------------------

Graph global_graph(bool max, std::int64_t c, std::int64_t h, std::int64_t w) {
  GraphBuilder b("t", Shape::chw(c, h, w), 10);
  b.add((max ? layers::global_maxpool() : layers::global_avgpool()).named("g")).add(layers::flatten()).add(layers::linear(10));
  return b.build();
}

TEST(OpsPool, GlobalMatchesReference) {
  for (bool max : {true, false})
    for (bool ties : {false, true}) {
      SCOPED_TRACE(std::string(max ? "global_maxpool" : "global_avgpool") + (ties ? ", ties" : ""));
      const std::int64_t n = 3, c = 4, hh = 5, ww = 7, size = hh * ww;
      OpHarness h(global_graph(max, c, hh, ww), "g", n);
      ASSERT_EQ(h.layer().shape, Shape::chw(c, 1, 1));
      if (ties)
        for (float& v : h.x[0]) v = std::floor(v);
      std::vector<double> y(static_cast<std::size_t>(n * c)), dx(h.x[0].size());
      for (std::int64_t p = 0; p < n * c; ++p) {
        double sum = 0, best = -INFINITY;
        std::size_t arg = 0;
        for (std::int64_t i = 0; i < size; ++i) {
          const auto e = static_cast<std::size_t>(p * size + i);
          sum += h.x[0][e];
          if (h.x[0][e] > best) best = h.x[0][e], arg = e;
        }
        y[static_cast<std::size_t>(p)] = max ? best : sum / size;
        if (max)
          dx[arg] = h.dy[static_cast<std::size_t>(p)];
        else
          for (std::int64_t i = 0; i < size; ++i) dx[static_cast<std::size_t>(p * size + i)] = h.dy[static_cast<std::size_t>(p)] / size;
      }
      h.forward();
      expect_matches(y, h.y.data(), max ? 0.0 : 1e-6, max ? 0.0 : 1e-6, "y");
      if (!max) std::fill(h.x[0].begin(), h.x[0].end(), kNaN);
      std::fill(h.y.begin(), h.y.end(), kNaN);
      expect_grad_paths(h, dx, 1e-7, 1e-6);
    }
}

TEST(OpsPool, GlobalFiniteDifferences) {
  for (bool max : {true, false}) {
    OpHarness h(global_graph(max, 3, 4, 6), "g", 2);
    std::vector<float> v(h.x[0].size());
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.05f * static_cast<float>(i) - 3.0f;
    std::shuffle(v.begin(), v.end(), std::mt19937(3));
    h.x[0] = v;
    h.bind();
    h.forward();
    h.backward();
    const std::vector<float> dx = h.dx[0];
    for (std::size_t e = 0; e < dx.size(); e += 11) {
      const double fd = h.numeric_grad(&h.x[0][e], 1e-2f);
      EXPECT_NEAR(dx[e], fd, 1e-3 + 1e-3 * std::fabs(fd)) << (max ? "max" : "avg") << " element " << e;
    }
  }
}

}  // namespace
}  // namespace kiln::test
