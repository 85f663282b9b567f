// BackendOps for maxpool, avgpool, global_avgpool and global_maxpool: a direct reference of
// PyTorch's max_pool2d / avg_pool2d (count_include_pad=True, ceil_mode) and of adaptive
// pooling to 1x1. Max takes the first strictly greater value in row-major order.
#include <cmath>

#include "backend_ops.hpp"

namespace kiln::test::ops {
namespace {

struct PoolGeometry {
  std::string name;
  Shape in;
  Hw kernel, stride, pad;
  bool ceil;
  std::int64_t n = 2, capacity = 0;
};

const PoolGeometry kPools[] = {
    {"3x3_s2_p1_ceil_nonsquare", Shape::chw(2, 7, 9), {3, 3}, {2, 2}, {1, 1}, true},
    {"cifar_quick_3s2_ceil_16", Shape::chw(3, 16, 16), {3, 3}, {2, 2}, {0, 0}, true},
    {"cifar_quick_3s2_ceil_8", Shape::chw(3, 8, 8), {3, 3}, {2, 2}, {0, 0}, true},
    {"2x2_s2_floor", Shape::chw(2, 8, 8), {2, 2}, {2, 2}, {0, 0}, false},
    {"3x2_stride1x2_pad1x0_floor", Shape::chw(2, 6, 5), {3, 2}, {1, 2}, {1, 0}, false},
    {"stride3_gt_kernel2_floor", Shape::chw(2, 8, 7), {2, 2}, {3, 3}, {0, 0}, false},
    {"stride3_gt_kernel2_ceil", Shape::chw(2, 8, 7), {2, 2}, {3, 3}, {0, 0}, true},
    {"2x3_stride3x2_pad1_ceil", Shape::chw(2, 7, 6), {2, 3}, {3, 2}, {1, 1}, true},
    {"3x3_s2_p1_floor_n3", Shape::chw(1, 9, 9), {3, 3}, {2, 2}, {1, 1}, false, 3},
    {"partial_batch_2_of_5", Shape::chw(3, 6, 6), {2, 2}, {2, 2}, {0, 0}, false, 2, 5},
};

std::vector<OpCase> pool_cases(bool max) {
  std::vector<OpCase> cases;
  for (const PoolGeometry& g : kPools) {
    LayerDef def = max ? layers::maxpool(g.kernel) : layers::avgpool(g.kernel);
    def.stride(g.stride).pad(Padding::hw(g.pad.h, g.pad.w)).ceil(g.ceil);
    cases.push_back({.name = g.name, .graph = one_op_graph(def, g.in), .n = g.n, .capacity = g.capacity});
  }
  // Small integers tie often, across overlapping windows too: the first maximum takes the
  // gradient.
  auto ties = [](OpData& d) {
    for (float& v : d.x[0]) v = std::floor(v);
  };
  if (max)
    for (const PoolGeometry& g : {kPools[0], kPools[1], kPools[4]}) {
      LayerDef def = layers::maxpool(g.kernel);
      def.stride(g.stride).pad(Padding::hw(g.pad.h, g.pad.w)).ceil(g.ceil);
      cases.push_back({.name = "ties_" + g.name, .graph = one_op_graph(def, g.in), .n = g.n, .tweak = ties, .finite_differences = false});
    }
  return cases;
}

// PyTorch's CPU loops: window [start, min(start + k, size + pad)) is the divisor, then
// clipped to the input.
OpRef pool_reference(bool max, const RefInput& in) {
  const Attrs& a = in.layer.attrs;
  const Shape xs = in.in[0], ys = in.layer.shape;
  const Hw s = *a.stride;
  const std::vector<float>& x = in.data.x[0];
  OpRef r;
  r.y.assign(count(ys, in.n), 0.0);
  r.dx.assign(1, std::vector<double>(x.size(), 0.0));
  for (std::int64_t b = 0; b < in.n; ++b)
    for (std::int64_t c = 0; c < xs.c; ++c)
      for (std::int64_t i = 0; i < ys.h; ++i)
        for (std::int64_t j = 0; j < ys.w; ++j) {
          std::int64_t h0 = i * s.h - a.pad.top, w0 = j * s.w - a.pad.left;
          std::int64_t h1 = std::min(h0 + a.kernel.h, xs.h + a.pad.bottom), w1 = std::min(w0 + a.kernel.w, xs.w + a.pad.right);
          const auto divisor = static_cast<double>((h1 - h0) * (w1 - w0));
          h0 = std::max<std::int64_t>(h0, 0), w0 = std::max<std::int64_t>(w0, 0);
          h1 = std::min(h1, xs.h), w1 = std::min(w1, xs.w);
          const std::size_t o = at(ys, b, c, i, j);
          double best = -INFINITY, sum = 0;
          std::size_t arg = 0;
          for (std::int64_t yy = h0; yy < h1; ++yy)
            for (std::int64_t xx = w0; xx < w1; ++xx) {
              const std::size_t e = at(xs, b, c, yy, xx);
              sum += x[e];
              if (x[e] > best) best = x[e], arg = e;
            }
          if (max) {
            r.y[o] = best;
            r.dx[0][arg] += in.data.dy[o];
          } else {
            r.y[o] = sum / divisor;
            for (std::int64_t yy = h0; yy < h1; ++yy)
              for (std::int64_t xx = w0; xx < w1; ++xx) r.dx[0][at(xs, b, c, yy, xx)] += in.data.dy[o] / divisor;
          }
        }
  return r;
}

std::vector<OpCase> maxpool_cases() { return pool_cases(true); }
std::vector<OpCase> avgpool_cases() { return pool_cases(false); }
OpRef maxpool_reference(const RefInput& in) { return pool_reference(true, in); }
OpRef avgpool_reference(const RefInput& in) { return pool_reference(false, in); }

// Max copies a value (exact); avg divides a float sum of at most 9 values.
const OpSpec kMaxPool{.cases = maxpool_cases,
                      .reference = maxpool_reference,
                      .forward = {0, 0},
                      .backward = {1e-6, 1e-5},
                      .layouts = {0, 0},
                      .cuda = {0, 0}};
const OpSpec kAvgPool{.cases = avgpool_cases,
                      .reference = avgpool_reference,
                      .forward = {1e-6, 1e-5},
                      .backward = {1e-6, 1e-5},
                      .layouts = {0, 0},
                      .cuda = {1e-6, 1e-5}};
KILN_BACKEND_OPS(MaxPool, kMaxPool);
KILN_BACKEND_OPS(AvgPool, kAvgPool);

// ---- global pools --------------------------------------------------------------------------

std::vector<OpCase> global_cases(bool max) {
  const LayerDef def = max ? layers::global_maxpool() : layers::global_avgpool();
  // Integer values: ties, where the first maximum takes the gradient.
  auto ties = [](OpData& d) {
    for (float& v : d.x[0]) v = std::floor(v);
  };
  return {{.name = "4x5x7_n3", .graph = one_op_graph(def, Shape::chw(4, 5, 7)), .n = 3},
          {.name = "ties", .graph = one_op_graph(def, Shape::chw(3, 4, 6)), .n = 2, .tweak = ties, .finite_differences = !max},
          {.name = "1x1_plane", .graph = one_op_graph(def, Shape::chw(5, 1, 1)), .n = 2},
          {.name = "wide_plane_33x31", .graph = one_op_graph(def, Shape::chw(2, 33, 31)), .n = 2},
          {.name = "partial_batch_1_of_4", .graph = one_op_graph(def, Shape::chw(3, 3, 3)), .n = 1, .capacity = 4}};
}

OpRef global_reference(bool max, const RefInput& in) {
  const Shape xs = in.in[0];
  const std::int64_t plane = xs.h * xs.w;
  const std::vector<float>& x = in.data.x[0];
  OpRef r;
  r.y.assign(static_cast<std::size_t>(in.n * xs.c), 0.0);
  r.dx.assign(1, std::vector<double>(x.size(), 0.0));
  for (std::int64_t p = 0; p < in.n * xs.c; ++p) {
    double sum = 0, best = -INFINITY;
    std::size_t arg = 0;
    for (std::int64_t i = 0; i < plane; ++i) {
      const auto e = static_cast<std::size_t>(p * plane + i);
      sum += x[e];
      if (x[e] > best) best = x[e], arg = e;
    }
    const double g = in.data.dy[static_cast<std::size_t>(p)];
    r.y[static_cast<std::size_t>(p)] = max ? best : sum / static_cast<double>(plane);
    if (max)
      r.dx[0][arg] = g;
    else
      for (std::int64_t i = 0; i < plane; ++i) r.dx[0][static_cast<std::size_t>(p * plane + i)] = g / static_cast<double>(plane);
  }
  return r;
}

std::vector<OpCase> global_maxpool_cases() { return global_cases(true); }
std::vector<OpCase> global_avgpool_cases() { return global_cases(false); }
OpRef global_maxpool_reference(const RefInput& in) { return global_reference(true, in); }
OpRef global_avgpool_reference(const RefInput& in) { return global_reference(false, in); }

const OpSpec kGlobalMaxPool{.cases = global_maxpool_cases,
                            .reference = global_maxpool_reference,
                            .forward = {0, 0},
                            .backward = {1e-7, 1e-6},
                            .layouts = {0, 0},
                            .cuda = {0, 0}};
// A float sum of up to ~1000 values: the order may differ between layouts and devices.
const OpSpec kGlobalAvgPool{.cases = global_avgpool_cases,
                            .reference = global_avgpool_reference,
                            .forward = {1e-6, 1e-5},
                            .backward = {1e-7, 1e-6},
                            .layouts = {1e-6, 1e-5},
                            .cuda = {1e-6, 1e-5}};
KILN_BACKEND_OPS(GlobalMaxPool, kGlobalMaxPool);
KILN_BACKEND_OPS(GlobalAvgPool, kGlobalAvgPool);

}  // namespace
}  // namespace kiln::test::ops
