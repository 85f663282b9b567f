// BackendOps for upsample: nearest, PyTorch's Upsample(scale_factor, mode='nearest'), by
// equal and unequal integer factors, including 1 (a copy).
#include "backend_ops.hpp"

namespace kiln::test::ops {
namespace {

std::vector<OpCase> upsample_cases() {
  return {{.name = "x2_of_3x4x5", .graph = one_op_graph(layers::upsample(2), Shape::chw(3, 4, 5)), .n = 2},
          {.name = "x1x3", .graph = one_op_graph(layers::upsample(Hw{1, 3}), Shape::chw(2, 3, 3)), .n = 3},
          {.name = "x3x2", .graph = one_op_graph(layers::upsample(Hw{3, 2}), Shape::chw(4, 2, 3)), .n = 2},
          {.name = "x1_copy", .graph = one_op_graph(layers::upsample(1), Shape::chw(2, 3, 3)), .n = 2},
          {.name = "partial_batch_1_of_3", .graph = one_op_graph(layers::upsample(2), Shape::chw(2, 3, 3)), .n = 1,
           .capacity = 3}};
}

// y[h, w] = x[h / sh, w / sw]; dx sums the sh x sw outputs each input fed.
OpRef upsample_reference(const RefInput& in) {
  const Shape xs = in.in[0], ys = in.layer.shape;
  const Hw f = in.layer.attrs.scale;
  OpRef r;
  r.y.assign(count(ys, in.n), 0.0);
  r.dx.assign(1, std::vector<double>(count(xs, in.n), 0.0));
  for (std::int64_t b = 0; b < in.n; ++b)
    for (std::int64_t c = 0; c < ys.c; ++c)
      for (std::int64_t h = 0; h < ys.h; ++h)
        for (std::int64_t w = 0; w < ys.w; ++w) {
          r.y[at(ys, b, c, h, w)] = in.data.x[0][at(xs, b, c, h / f.h, w / f.w)];
          r.dx[0][at(xs, b, c, h / f.h, w / f.w)] += in.data.dy[at(ys, b, c, h, w)];
        }
  return r;
}

// Forward copies; backward is a float sum of sh*sw values in the same order on every backend.
const OpSpec kUpsample{.cases = upsample_cases,
                       .reference = upsample_reference,
                       .forward = {0, 0},
                       .backward = {1e-6, 1e-6},
                       .layouts = {0, 0},
                       .cuda = {0, 0}};
KILN_BACKEND_OPS(Upsample, kUpsample);

}  // namespace
}  // namespace kiln::test::ops
