// BackendOps for add and concat: images (joined convolutions) and vectors (joined linear
// layers), two and three inputs; per input, dx overwritten, accumulated or null.
#include <fmt/format.h>

#include "backend_ops.hpp"

namespace kiln::test::ops {
namespace {

// `parts[k]`-channel convolutions of the input (or linear layers of its flattening), joined.
Graph join_graph(bool concat, bool image, const std::vector<std::int64_t>& parts) {
  GraphBuilder b("t", Shape::chw(3, 6, 5), 10);
  if (!image) b.add(layers::flatten().named("f"));
  std::vector<std::string> names;
  for (std::size_t k = 0; k < parts.size(); ++k) {
    names.push_back(fmt::format("p{}", k));
    b.add((image ? layers::conv(parts[k], 3).pad(1) : layers::linear(parts[k])).named(names.back()).from({image ? "input" : "f"}));
  }
  b.add((concat ? layers::concat(names) : layers::add(names)).named("op"));
  if (image) b.add(layers::flatten());
  b.add(layers::linear(10));
  return b.build();
}

std::vector<OpCase> add_cases() {
  return {{.name = "images_of_three", .graph = join_graph(false, true, {4, 4, 4}), .n = 2},
          {.name = "images_of_two", .graph = join_graph(false, true, {3, 3}), .n = 3},
          {.name = "vectors_of_three", .graph = join_graph(false, false, {7, 7, 7}), .n = 3},
          {.name = "partial_batch_2_of_4", .graph = join_graph(false, true, {2, 2, 2}), .n = 2, .capacity = 4}};
}

OpRef add_reference(const RefInput& in) {
  OpRef r;
  r.y.assign(in.data.dy.size(), 0.0);
  for (const auto& x : in.data.x)
    for (std::size_t i = 0; i < x.size(); ++i) r.y[i] += x[i];
  r.dx.assign(in.data.x.size(), widen(in.data.dy));
  return r;
}

// A float sum of up to 3 values, in input order.
const OpSpec kAdd{.cases = add_cases,
                  .reference = add_reference,
                  .forward = {1e-6, 1e-6},
                  .backward = {0, 0},
                  .layouts = {0, 0},
                  .cuda = {0, 0}};
KILN_BACKEND_OPS(Add, kAdd);

std::vector<OpCase> concat_cases() {
  return {{.name = "images_2_3_1", .graph = join_graph(true, true, {2, 3, 1}), .n = 3},
          {.name = "images_4_4", .graph = join_graph(true, true, {4, 4}), .n = 2},
          {.name = "vectors_4_2_5", .graph = join_graph(true, false, {4, 2, 5}), .n = 3},
          {.name = "partial_batch_1_of_3", .graph = join_graph(true, true, {1, 2, 3}), .n = 1, .capacity = 3}};
}

// Input k's channels land at the sum of the channels before it, for every sample and pixel.
OpRef concat_reference(const RefInput& in) {
  const Shape ys = in.layer.shape;
  OpRef r;
  r.y.assign(count(ys, in.n), 0.0);
  std::int64_t offset = 0;
  for (std::size_t k = 0; k < in.in.size(); ++k) {
    const Shape xs = in.in[k];
    r.dx.emplace_back(count(xs, in.n), 0.0);
    for (std::int64_t b = 0; b < in.n; ++b)
      for (std::int64_t c = 0; c < xs.c; ++c)
        for (std::int64_t h = 0; h < xs.h; ++h)
          for (std::int64_t w = 0; w < xs.w; ++w) {
            r.y[at(ys, b, offset + c, h, w)] = in.data.x[k][at(xs, b, c, h, w)];
            r.dx[k][at(xs, b, c, h, w)] = in.data.dy[at(ys, b, offset + c, h, w)];
          }
    offset += xs.c;
  }
  return r;
}

const OpSpec kConcat{.cases = concat_cases,
                     .reference = concat_reference,
                     .forward = {0, 0},
                     .backward = {0, 0},
                     .layouts = {0, 0},
                     .cuda = {0, 0}};
KILN_BACKEND_OPS(Concat, kConcat);

}  // namespace
}  // namespace kiln::test::ops
