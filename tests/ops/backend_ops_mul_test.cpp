// BackendOps for mul: two images or two vectors of one shape, and an image gated per channel
// by a vector of C features (squeeze-and-excitation) or by a C x 1 x 1 map.
#include "backend_ops.hpp"

namespace kiln::test::ops {
namespace {

enum class Gate { same_image, vector, c11, same_vector };

// A 4-channel 1x1 convolution of the input, times a second tensor made from the input.
Graph mul_graph(Gate gate) {
  GraphBuilder b("t", Shape::chw(3, 5, 6), 10);
  if (gate == Gate::same_vector) {
    b.add(layers::flatten().named("f")).add(layers::linear(7).named("a")).add(layers::linear(7).named("g").from({"f"}));
    b.add(layers::mul({"a", "g"}).named("op")).add(layers::linear(10));
    return b.build();
  }
  b.add(layers::conv(4, 3).pad(1).named("a"));
  switch (gate) {
    case Gate::same_image: b.add(layers::conv(4, 1).named("g").from({"input"})); break;
    case Gate::vector:
      b.add(layers::global_avgpool().named("p").from({"input"})).add(layers::flatten()).add(layers::linear(4).named("g"));
      break;
    case Gate::c11: b.add(layers::global_avgpool().named("p").from({"input"})).add(layers::conv(4, 1).named("g")); break;
    case Gate::same_vector: break;
  }
  b.add(layers::mul({"a", "g"}).named("op")).add(layers::flatten()).add(layers::linear(10));
  return b.build();
}

std::vector<OpCase> mul_cases() {
  return {{.name = "images", .graph = mul_graph(Gate::same_image), .n = 2},
          {.name = "gate_vector", .graph = mul_graph(Gate::vector), .n = 3},
          {.name = "gate_c11", .graph = mul_graph(Gate::c11), .n = 2},
          {.name = "vectors", .graph = mul_graph(Gate::same_vector), .n = 3},
          {.name = "partial_batch_2_of_4", .graph = mul_graph(Gate::vector), .n = 2, .capacity = 4}};
}

// y = a * b; da = dy * b; db = dy * a, summed over h and w when b is one value per channel.
OpRef mul_reference(const RefInput& in) {
  const std::vector<float>& a = in.data.x[0];
  const std::vector<float>& b = in.data.x[1];
  const std::vector<float>& dy = in.data.dy;
  const bool per_channel = in.in[1] != in.in[0];
  const auto plane = static_cast<std::size_t>(in.in[0].h * in.in[0].w);
  OpRef r;
  r.y.assign(a.size(), 0.0);
  r.dx = {std::vector<double>(a.size(), 0.0), std::vector<double>(b.size(), 0.0)};
  for (std::size_t k = 0; k < a.size(); ++k) {
    const std::size_t kb = per_channel ? k / plane : k;  // logical NCHW: (n, c) is k / (h * w)
    r.y[k] = static_cast<double>(a[k]) * b[kb];
    r.dx[0][k] = static_cast<double>(dy[k]) * b[kb];
    r.dx[1][kb] += static_cast<double>(dy[k]) * a[k];
  }
  return r;
}

// One float multiply per element; the per-channel gradient sums in double over h and w in
// the same order in either layout (NHWC is NCHW bit for bit), on CUDA in a tree.
const OpSpec kMul{.cases = mul_cases,
                  .reference = mul_reference,
                  .forward = {1e-6, 1e-6},
                  .backward = {1e-5, 1e-5},
                  .layouts = {0, 0},
                  .cuda = {1e-5, 1e-5}};
KILN_BACKEND_OPS(Mul, kMul);

}  // namespace
}  // namespace kiln::test::ops
