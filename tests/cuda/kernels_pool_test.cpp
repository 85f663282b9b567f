// kiln's pooling CUDA kernels (cuda/kernels/pool.cu) against the CPU maxpool, avgpool,
// global_maxpool and global_avgpool layers on the same data, NCHW and NHWC. Max pooling
// (values and gradients, ties and NaN included) must be exact: the kernels scan windows in
// the CPU's order and gather gradients in the CPU's order. Average pooling 1e-6/1e-6 (the
// same float operations; the bound only allows for contraction into FMA).
//
// The host-side tests of math/pool_strided.hpp run without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels_test_util.hpp"
#include "math/pool.hpp"
#include "math/pool_strided.hpp"

namespace kiln::test {
namespace {

using cuda::Dims4;

struct PoolCase {
  const char* what;
  std::int64_t c, h, w;
  Hw kernel, stride, pad;
  bool ceil;
};

const PoolCase kCases[] = {
    {"3x3 s2 p1 ceil, non-square input", 2, 7, 9, {3, 3}, {2, 2}, {1, 1}, true},
    {"cifar_quick 3/2 ceil on 16x16", 3, 16, 16, {3, 3}, {2, 2}, {0, 0}, true},
    {"2x2 s2 floor", 2, 8, 8, {2, 2}, {2, 2}, {0, 0}, false},
    {"3x2 kernel, stride 1x2 < kernel, pad 1x0, floor", 2, 6, 5, {3, 2}, {1, 2}, {1, 0}, false},
    {"stride 3 > kernel 2, ceil", 2, 8, 7, {2, 2}, {3, 3}, {0, 0}, true},
    {"2x3 kernel, stride 3x2, pad 1x1, ceil", 2, 7, 6, {2, 3}, {3, 2}, {1, 1}, true},
    {"3x3 s1 p1 (every input in 9 windows)", 3, 5, 6, {3, 3}, {1, 1}, {1, 1}, false},
    {"5x5 s2 p2 ceil", 2, 9, 9, {5, 5}, {2, 2}, {2, 2}, true},
};

Graph pool_graph(bool max, const PoolCase& c) {
  LayerDef def = max ? layers::maxpool(c.kernel) : layers::avgpool(c.kernel);
  def.stride(c.stride).pad(Padding::hw(c.pad.h, c.pad.w)).ceil(c.ceil).named("p");
  GraphBuilder b("t", Shape::chw(c.c, c.h, c.w), 10);
  b.add(def).add(layers::flatten()).add(layers::linear(10));
  return b.build();
}

cuda::PoolGeometry geometry(const Layer& layer) {
  const Attrs& a = layer.attrs;
  return {a.kernel.h, a.kernel.w, a.stride->h, a.stride->w, a.pad.top, a.pad.left};
}

enum class Values { random, ties, nan };

void check_pool(bool max, const PoolCase& c, bool nhwc, Values values) {
  SCOPED_TRACE(std::string(max ? "maxpool " : "avgpool ") + c.what + ", " + layout_name(nhwc) +
               (values == Values::ties ? ", ties" : values == Values::nan ? ", NaN" : ""));
  const std::int64_t n = 2;
  OpHarness h(pool_graph(max, c), "p", n);
  if (values == Values::ties)
    for (float& v : h.x[0]) v = std::floor(v);  // small integers: many equal maxima
  if (values == Values::nan)
    for (std::size_t i = 0; i < h.x[0].size(); i += 7) h.x[0][i] = kNaN;
  h.bind();
  const Dims4 in = dims_of(h.cpu.in_shape(), n, nhwc), out = dims_of(h.layer().shape, n, nhwc);
  const cuda::PoolGeometry g = geometry(h.layer());
  const double tol = max ? 0.0 : 1e-6;

  h.forward();
  DeviceBuffer<float> x(to_layout(h.x[0], in)), y(std::vector<float>(h.y.size(), kNaN)), dy(to_layout(h.dy, out));
  cuda::pool_forward(DType::f32, max, x.get(), in, y.get(), out, g, nullptr);
  expect_near(h.y, from_layout(y.download(), out), tol, tol, "y", &out);

  check_dx(h, in, tol, tol, [&](float* dx, bool accumulate) {
    cuda::pool_backward(DType::f32, max, x.get(), in, dy.get(), out, dx, accumulate, g, nullptr);
  });
}

TEST(CudaPool, MaxAndAvgMatchCpu) {
  KILN_REQUIRE_GPU();
  for (bool max : {true, false})
    for (const PoolCase& c : kCases)
      for (bool nhwc : {false, true}) check_pool(max, c, nhwc, Values::random);
}

TEST(CudaPool, MaxTiesGoToTheFirstMaximum) {
  KILN_REQUIRE_GPU();
  for (const PoolCase& c : kCases)
    for (bool nhwc : {false, true}) check_pool(true, c, nhwc, Values::ties);

  // By hand: a 2x2 window of equal values sends its whole gradient to the top-left one.
  const Dims4 in{1, 1, 2, 2, false}, out{1, 1, 1, 1, false};
  DeviceBuffer<float> x(std::vector<float>{3, 3, 3, 3}), dy(std::vector<float>{5}), dx(4);
  cuda::pool_backward(DType::f32, true, x.get(), in, dy.get(), out, dx.get(), false, {2, 2, 2, 2, 0, 0}, nullptr);
  EXPECT_EQ(dx.download(), (std::vector<float>{5, 0, 0, 0}));
}

TEST(CudaPool, NaNPropagatesLikeTheCpu) {
  KILN_REQUIRE_GPU();
  for (bool max : {true, false})
    for (const PoolCase& c : kCases)
      for (bool nhwc : {false, true}) check_pool(max, c, nhwc, Values::nan);
}

// ---- global pooling -----------------------------------------------------------------------

void check_global(bool max, bool nhwc, bool ties) {
  SCOPED_TRACE(std::string(max ? "global_maxpool " : "global_avgpool ") + layout_name(nhwc) + (ties ? ", ties" : ""));
  const std::int64_t n = 3;
  GraphBuilder b("t", Shape::chw(4, 5, 7), 10);
  b.add((max ? layers::global_maxpool() : layers::global_avgpool()).named("g")).add(layers::flatten()).add(layers::linear(10));
  OpHarness h(b.build(), "g", n);
  if (ties)
    for (float& v : h.x[0]) v = std::floor(v);
  h.bind();
  const Dims4 in = dims_of(h.cpu.in_shape(), n, nhwc), out = dims_of(h.layer().shape, n, nhwc);
  const double tol = max ? 0.0 : 1e-6;
  h.forward();
  DeviceBuffer<float> x(to_layout(h.x[0], in)), y(std::vector<float>(h.y.size(), kNaN)), dy(h.dy);
  cuda::global_pool_forward(DType::f32, max, x.get(), in, y.get(), nullptr);
  expect_near(h.y, from_layout(y.download(), out), tol, tol, "y", &out);
  check_dx(h, in, tol, tol, [&](float* dx, bool accumulate) {
    cuda::global_pool_backward(DType::f32, max, x.get(), in, dy.get(), dx, accumulate, nullptr);
  });
}

TEST(CudaPool, GlobalMatchCpu) {
  KILN_REQUIRE_GPU();
  for (bool max : {true, false})
    for (bool nhwc : {false, true})
      for (bool ties : {false, true}) check_global(max, nhwc, ties);
}

// ---- math/pool_strided.hpp on the host (no GPU needed) -------------------------------------

// pool_cover's range holds every output whose window reads the input index, for many
// geometries (a superset is enough: the kernel re-tests membership with pool_span).
TEST(PoolStrided, CoverHoldsEveryWindowThatReadsAnIndex) {
  for (std::int64_t size = 1; size <= 12; ++size)
    for (std::int64_t k = 1; k <= 5; ++k)
      for (std::int64_t s = 1; s <= 4; ++s)
        for (std::int64_t pad = 0; 2 * pad <= k; ++pad) {
          if (k > size + 2 * pad) continue;
          for (bool ceil : {false, true}) {
            const std::int64_t span = size + 2 * pad - k;
            std::int64_t outs = (ceil ? (span + s - 1) / s : span / s) + 1;
            if (ceil && (outs - 1) * s >= size + pad) --outs;
            for (std::int64_t i = 0; i < size; ++i) {
              const math::PoolCover cover = math::pool_cover(i, k, s, pad, outs);
              for (std::int64_t o = 0; o < outs; ++o) {
                const math::PoolSpan sp = math::pool_span(o, k, s, pad, size);
                if (sp.begin <= i && i < sp.end) {
                  EXPECT_TRUE(cover.first <= o && o <= cover.last)
                      << "size " << size << " k " << k << " s " << s << " pad " << pad << " ceil " << ceil << ": input " << i
                      << " is read by output " << o << " but cover is [" << cover.first << ", " << cover.last << "]";
                }
              }
              EXPECT_GE(cover.first, 0);
              EXPECT_LE(cover.last, outs - 1);
            }
          }
        }
}

// With column stride 1 the strided scans are max_offset and avg_window; on an NHWC copy of
// the planes they find the same element and the same sum.
TEST(PoolStrided, MatchesThePlaneScansInBothLayouts) {
  const std::int64_t C = 3, H = 5, W = 4;
  std::vector<float> nchw(static_cast<std::size_t>(C * H * W));
  for (std::size_t i = 0; i < nchw.size(); ++i) nchw[i] = std::floor(std::sin(static_cast<float>(i) * 1.7f) * 3.0f);
  nchw[17] = kNaN;
  const Dims4 d{1, C, H, W, true};
  const std::vector<float> nhwc = to_layout(nchw, d);
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t o = 0; o < 3; ++o) {
      const math::PoolSpan rows = math::pool_span(o, 3, 2, 1, H), cols = math::pool_span(o % 2, 3, 2, 1, W);
      const float* plane = nchw.data() + c * H * W;
      const std::int64_t want = math::max_offset(plane, W, rows, cols);
      EXPECT_EQ(math::max_offset_strided(plane, W, 1, rows, cols), want);
      const std::int64_t got = math::max_offset_strided(nhwc.data() + c, W * C, C, rows, cols);
      EXPECT_EQ(got / (W * C), want / W) << "row";
      EXPECT_EQ((got % (W * C)) / C, want % W) << "column";
      const float avg = math::avg_window(plane, W, rows, cols);
      const float avg_nhwc = math::avg_window_strided(nhwc.data() + c, W * C, C, rows, cols);
      EXPECT_TRUE(avg == avg_nhwc || (std::isnan(avg) && std::isnan(avg_nhwc))) << avg << " vs " << avg_nhwc;
    }
}

}  // namespace
}  // namespace kiln::test
