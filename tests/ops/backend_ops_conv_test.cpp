// BackendOps for conv and linear: a direct double-precision reference (plain loops, no
// im2col or GEMM) over geometries that reach every path of the kernels.
#include "backend_ops.hpp"

namespace kiln::test::ops {
namespace {

// ---- conv ----------------------------------------------------------------------------------

struct ConvGeometry {
  std::string name;
  Shape in;
  std::int64_t out;
  Hw kernel;
  Hw stride{1, 1};
  Padding pad{};
  Hw dilation{1, 1};
  std::int64_t groups = 1;
  bool bias = true;
  std::int64_t n = 2;
  bool frozen = false;
  std::int64_t capacity = 0;
};

OpCase conv_case(const ConvGeometry& k) {
  LayerDef conv = layers::conv(k.out, k.kernel).stride(k.stride).pad(k.pad).groups(k.groups).bias(k.bias);
  conv.attrs.dilation = k.dilation;
  if (k.frozen) conv.frozen();
  return {.name = k.name, .graph = one_op_graph(conv, k.in), .n = k.n, .capacity = k.capacity};
}

// Stride 1 with 'same' width (im2col by shifted planes) and row by row, taps that see only
// padding, strides, dilations, groups, depthwise, pointwise convs that read x directly, a
// frozen layer, a partial batch.
std::vector<OpCase> conv_cases() {
  const ConvGeometry geometries[] = {
      {"k3_pad1", Shape::chw(3, 8, 8), 4, {3, 3}, {1, 1}, Padding::all(1)},
      {"k3_stride2_nobias_odd", Shape::chw(4, 9, 7), 6, {3, 3}, {2, 2}, Padding::all(1), {1, 1}, 1, false, 3},
      {"k4_same_even", Shape::chw(4, 8, 8), 4, {4, 4}, {1, 1}, Padding::same_size()},
      {"k2x3_same_dil1x2", Shape::chw(2, 7, 9), 3, {2, 3}, {1, 1}, Padding::same_size(), {1, 2}},
      {"asym_pad_stride2x1", Shape::chw(3, 7, 6), 5, {3, 2}, {2, 1}, Padding{0, 2, 1, 0, false}},
      {"dil2_groups2", Shape::chw(4, 10, 10), 6, {3, 3}, {1, 1}, Padding::all(2), {2, 2}, 2},
      {"dil2x1_stride1x3", Shape::chw(2, 9, 11), 2, {3, 2}, {1, 3}, Padding{1, 0, 2, 1, false}, {2, 1}},
      {"groups4_asym", Shape::chw(8, 9, 9), 8, {3, 3}, {2, 2}, Padding{1, 0, 0, 1, false}, {1, 1}, 4},
      {"depthwise_same_dil2", Shape::chw(6, 8, 8), 6, {3, 3}, {1, 1}, Padding::same_size(), {2, 2}, 6},
      {"depthwise_x2", Shape::chw(3, 6, 6), 6, {3, 3}, {2, 2}, Padding::all(1), {1, 1}, 3, false},
      {"depthwise_stride2_bias", Shape::chw(8, 9, 9), 8, {3, 3}, {2, 2}, Padding::all(1), {1, 1}, 8, true, 3},
      {"depthwise_k5x3_asym", Shape::chw(4, 7, 6), 4, {5, 3}, {1, 2}, Padding{2, 0, 1, 1, false}, {1, 1}, 4},
      {"depthwise_frozen", Shape::chw(6, 8, 8), 6, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 6, false, 2, true},
      {"pointwise_n1", Shape::chw(5, 8, 8), 7, {1, 1}, {1, 1}, {}, {1, 1}, 1, true, 1},
      {"pointwise_n3_groups", Shape::chw(6, 8, 8), 4, {1, 1}, {1, 1}, {}, {1, 1}, 2, true, 3},
      {"pointwise_wide", Shape::chw(64, 6, 6), 8, {1, 1}, {1, 1}, {}, {1, 1}, 2, true, 3},
      {"k1_stride2", Shape::chw(3, 7, 7), 4, {1, 1}, {2, 2}},
      {"padding_only_taps", Shape::chw(2, 2, 3), 3, {1, 1}, {2, 2}, Padding{3, 1, 0, 2, false}},
      {"corners_all_padding", Shape::chw(2, 3, 3), 2, {3, 3}, {1, 1}, Padding::all(2)},
      {"k5_stride2_plane", Shape::chw(5, 17, 16), 3, {5, 5}, {2, 2}, Padding{2, 1, 2, 2, false}},
      {"frozen", Shape::chw(4, 8, 8), 6, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 2, true, 3, true},
      {"partial_batch_3_of_7", Shape::chw(3, 6, 6), 4, {3, 3}, {1, 1}, Padding::all(1), {1, 1}, 1, true, 3, false, 7},
  };
  std::vector<OpCase> cases;
  for (const ConvGeometry& g : geometries) cases.push_back(conv_case(g));
  return cases;
}

// The definition of the convolution and of its gradients under L = sum(y * dy), one
// multiply-add at a time.
OpRef conv_reference(const RefInput& in) {
  const Attrs& a = in.layer.attrs;
  const Shape x_shape = in.in[0], y_shape = in.layer.shape;
  const std::int64_t ci_g = x_shape.c / a.groups, co_g = y_shape.c / a.groups;
  const Hw s = *a.stride;
  const std::vector<float>& x = in.data.x[0];
  const std::vector<float>& w = in.data.params[0];
  OpRef r;
  r.y.assign(count(y_shape, in.n), 0.0);
  r.dx.assign(1, std::vector<double>(x.size(), 0.0));
  r.grads.assign(in.data.params.size(), {});
  r.grads[0].assign(w.size(), 0.0);
  if (a.bias) r.grads[1].assign(static_cast<std::size_t>(y_shape.c), 0.0);
  for (std::int64_t b = 0; b < in.n; ++b)
    for (std::int64_t co = 0; co < y_shape.c; ++co)
      for (std::int64_t oy = 0; oy < y_shape.h; ++oy)
        for (std::int64_t ox = 0; ox < y_shape.w; ++ox) {
          const std::size_t yi = at(y_shape, b, co, oy, ox);
          const double g = in.data.dy[yi];
          double acc = a.bias ? in.data.params[1][static_cast<std::size_t>(co)] : 0.0;
          for (std::int64_t cg = 0; cg < ci_g; ++cg) {
            const std::int64_t ci = co / co_g * ci_g + cg;
            for (std::int64_t i = 0; i < a.kernel.h; ++i)
              for (std::int64_t j = 0; j < a.kernel.w; ++j) {
                const std::int64_t iy = oy * s.h - a.pad.top + i * a.dilation.h;
                const std::int64_t ix = ox * s.w - a.pad.left + j * a.dilation.w;
                if (iy < 0 || iy >= x_shape.h || ix < 0 || ix >= x_shape.w) continue;
                const std::size_t xi = at(x_shape, b, ci, iy, ix);
                const auto wi = static_cast<std::size_t>(((co * ci_g + cg) * a.kernel.h + i) * a.kernel.w + j);
                acc += static_cast<double>(x[xi]) * w[wi];
                r.dx[0][xi] += g * w[wi];
                r.grads[0][wi] += g * x[xi];
              }
          }
          r.y[yi] = acc;
          if (a.bias) r.grads[1][static_cast<std::size_t>(co)] += g;
        }
  return r;
}

// Forward sums at most a few hundred products of N(0,1) values in fp32; backward sums up to
// n * H * W of them (dW).
const OpSpec kConv{.cases = conv_cases,
                   .reference = conv_reference,
                   .forward = {1e-4, 1e-4},
                   .backward = {5e-4, 1e-4},
                   .layouts = {1e-4, 1e-4},
                   .cuda = {2e-3, 2e-3}};  // cuDNN may use TF32-free but reordered sums, Winograd, FFT
KILN_BACKEND_OPS(Conv, kConv);
KILN_BACKEND_OPS_CONV_KERNELS(Conv);

// ---- linear --------------------------------------------------------------------------------

OpCase linear_case(std::string name, Shape in, std::int64_t out, bool bias, std::int64_t n, bool frozen = false,
                   std::int64_t capacity = 0) {
  LayerDef fc = layers::linear(out).bias(bias);
  if (frozen) fc.frozen();
  GraphBuilder b("t", in, 10);
  if (in.is_image()) b.add(layers::flatten());
  b.add(fc.named("op")).add(layers::linear(10));
  return {.name = std::move(name), .graph = b.build(), .n = n, .capacity = capacity};
}

std::vector<OpCase> linear_cases() {
  return {linear_case("flattened_image", Shape::chw(3, 4, 5), 7, true, 3),
          linear_case("no_bias", Shape::chw(2, 3, 3), 5, false, 2),
          linear_case("n1", Shape::chw(1, 5, 5), 3, true, 1),
          linear_case("wide_300_to_17", Shape::chw(3, 10, 10), 17, true, 5),
          linear_case("frozen", Shape::chw(2, 3, 3), 4, true, 3, true),
          linear_case("partial_batch_2_of_6", Shape::chw(2, 3, 3), 4, true, 2, false, 6)};
}

OpRef linear_reference(const RefInput& in) {
  const std::int64_t features = in.in[0].elements(), out = in.layer.shape.c;
  const bool bias = in.layer.attrs.bias;
  const std::vector<float>& x = in.data.x[0];
  const std::vector<float>& w = in.data.params[0];
  auto idx = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  OpRef r;
  r.y.assign(idx(in.n * out), 0.0);
  r.dx.assign(1, std::vector<double>(x.size(), 0.0));
  r.grads.assign(in.data.params.size(), {});
  r.grads[0].assign(w.size(), 0.0);
  if (bias) r.grads[1].assign(idx(out), 0.0);
  for (std::int64_t s = 0; s < in.n; ++s)
    for (std::int64_t o = 0; o < out; ++o) {
      const double g = in.data.dy[idx(s * out + o)];
      double acc = bias ? in.data.params[1][idx(o)] : 0.0;
      for (std::int64_t i = 0; i < features; ++i) {
        acc += static_cast<double>(x[idx(s * features + i)]) * w[idx(o * features + i)];
        r.dx[0][idx(s * features + i)] += g * w[idx(o * features + i)];
        r.grads[0][idx(o * features + i)] += g * x[idx(s * features + i)];
      }
      r.y[idx(s * out + o)] = acc;
      if (bias) r.grads[1][idx(o)] += g;
    }
  return r;
}

// A vector in, a vector out: both layouts hold the same memory (exact).
const OpSpec kLinear{.cases = linear_cases,
                     .reference = linear_reference,
                     .forward = {1e-4, 1e-4},
                     .backward = {2e-4, 1e-4},
                     .layouts = {0, 0},
                     .cuda = {1e-3, 1e-3}};
KILN_BACKEND_OPS(Linear, kLinear);

}  // namespace
}  // namespace kiln::test::ops
