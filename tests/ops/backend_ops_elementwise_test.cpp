// BackendOps for the element-wise ops (activations, dropout, scale) and flatten: PyTorch's
// definitions in double. Dropout's mask is drawn by the element's logical (n, c, h, w)
// offset in NCHW, in every layout and on every backend.
#include <cmath>
#include <numbers>

#include "backend_ops.hpp"
#include "math/dropout.hpp"

namespace kiln::test::ops {
namespace {

// Odd planes, a partial batch, values pushed into the tails (sigmoid and tanh saturate) and
// exact zeros (relu's kink, where the gradient is 0).
std::vector<OpCase> elementwise_cases(const LayerDef& def) {
  auto tails = [](OpData& d) {
    for (std::size_t i = 0; i < d.x[0].size(); i += 5) d.x[0][i] *= 4.0f;
    d.x[0][0] = 0.0f;
    d.x[0][1] = -0.0f;
    if (d.x[0].size() > 3) d.x[0][2] = 20.0f, d.x[0][3] = -20.0f;
  };
  return {{.name = "2x5x6_n3_tails", .graph = one_op_graph(def, Shape::chw(2, 5, 6)), .n = 3, .tweak = tails},
          {.name = "odd_3x7x3", .graph = one_op_graph(def, Shape::chw(3, 7, 3)), .n = 2},
          {.name = "partial_batch_2_of_5", .graph = one_op_graph(def, Shape::chw(4, 3, 5)), .n = 2, .capacity = 5}};
}

// An element-wise op's reference from f and its derivative.
template <class F, class DF>
OpRef pointwise(const RefInput& in, F f, DF df) {
  OpRef r;
  r.dx.resize(1);
  for (std::size_t i = 0; i < in.data.x[0].size(); ++i) {
    const double x = in.data.x[0][i];
    r.y.push_back(f(x));
    r.dx[0].push_back(df(x) * in.data.dy[i]);
  }
  return r;
}

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double phi(double x) { return 0.5 * (1 + std::erf(x / std::numbers::sqrt2)); }

// Float expf/erff/tanhf are within a few ulp; sigmoid and tanh backward compute 1 - y from a
// rounded y (~1e-7 absolute near saturation). Device functions differ from glibc by a few ulp.
constexpr Tolerance kActivation{1e-6, 1e-5}, kActivationCuda{1e-5, 1e-5};

#define KILN_ACTIVATION(Op, def, f, df)                                                               \
  std::vector<OpCase> Op##_cases() { return elementwise_cases(def); }                                 \
  OpRef Op##_reference(const RefInput& in) { return pointwise(in, f, df); }                           \
  const OpSpec k##Op{.cases = Op##_cases,                                                             \
                     .reference = Op##_reference,                                                     \
                     .forward = kActivation,                                                          \
                     .backward = kActivation,                                                         \
                     .layouts = {0, 0},                                                               \
                     .cuda = kActivationCuda};                                                        \
  KILN_BACKEND_OPS(Op, k##Op)

KILN_ACTIVATION(Relu, layers::relu(), [](double x) { return x > 0 ? x : 0.0; }, [](double x) { return x > 0 ? 1.0 : 0.0; });
KILN_ACTIVATION(LeakyRelu, layers::leaky_relu(0.2), [](double x) { return x > 0 ? x : 0.2 * x; },
                [](double x) { return x > 0 ? 1.0 : 0.2; });
KILN_ACTIVATION(Gelu, layers::gelu(), [](double x) { return x * phi(x); },
                [](double x) { return phi(x) + x * std::exp(-x * x / 2) / std::sqrt(2 * std::numbers::pi); });
KILN_ACTIVATION(Silu, layers::silu(), [](double x) { return x * sigmoid(x); },
                [](double x) { return sigmoid(x) * (1 + x * (1 - sigmoid(x))); });
KILN_ACTIVATION(Sigmoid, layers::sigmoid(), sigmoid, [](double x) { return sigmoid(x) * (1 - sigmoid(x)); });
KILN_ACTIVATION(Tanh, layers::tanh(), [](double x) { return std::tanh(x); },
                [](double x) { return 1 - std::tanh(x) * std::tanh(x); });

// ---- scale ---------------------------------------------------------------------------------

std::vector<OpCase> scale_cases() {
  auto cases = elementwise_cases(layers::scale(1.0 / 9));
  cases.push_back({.name = "negative_factor", .graph = one_op_graph(layers::scale(-2.5), Shape::chw(2, 3, 3)), .n = 2});
  return cases;
}

OpRef scale_reference(const RefInput& in) {
  const double factor = static_cast<float>(in.layer.attrs.factor);  // the kernels' fp32 factor
  return pointwise(in, [&](double x) { return x * factor; }, [&](double) { return factor; });
}

// fp32 products; a fused multiply-add may round once instead of twice.
const OpSpec kScale{.cases = scale_cases,
                    .reference = scale_reference,
                    .forward = {0, 1e-6},
                    .backward = {1e-6, 1e-6},
                    .layouts = {0, 0},
                    .cuda = {1e-6, 1e-6}};
KILN_BACKEND_OPS(Scale, kScale);

// ---- dropout -------------------------------------------------------------------------------

std::vector<OpCase> dropout_cases() {
  return {{.name = "p0.3_train_3x16x16", .graph = one_op_graph(layers::dropout(0.3), Shape::chw(3, 16, 16)), .n = 2},
          {.name = "p0.5_train_odd", .graph = one_op_graph(layers::dropout(0.5), Shape::chw(3, 5, 7)), .n = 3},
          {.name = "p0.5_eval_identity", .graph = one_op_graph(layers::dropout(0.5), Shape::chw(2, 4, 4)), .n = 2,
           .train = false},
          {.name = "p0_train_identity", .graph = one_op_graph(layers::dropout(0.0), Shape::chw(2, 4, 4)), .n = 2},
          {.name = "partial_batch_2_of_4", .graph = one_op_graph(layers::dropout(0.25), Shape::chw(4, 3, 5)), .n = 2,
           .capacity = 4}};
}

// Inverted dropout with the float p, as the kernels compute it; element i of the logical
// NCHW tensor keeps its value when random_uniform(key, i) >= p.
OpRef dropout_reference(const RefInput& in) {
  const auto p = static_cast<float>(in.layer.attrs.p);
  const bool identity = !in.train || p == 0.0f;
  const double scale = static_cast<float>(1.0 / (1.0 - static_cast<double>(p)));
  OpRef r;
  r.dx.resize(1);
  std::size_t kept = 0;
  for (std::size_t i = 0; i < in.data.x[0].size(); ++i) {
    const bool keep = identity || math::random_uniform(in.dropout_key, i) >= p;
    kept += keep;
    const double m = identity ? 1.0 : keep ? scale : 0.0;
    r.y.push_back(in.data.x[0][i] * m);
    r.dx[0].push_back(in.data.dy[i] * m);
  }
  // The rate: within 5 standard deviations of 1 - p.
  const auto total = static_cast<double>(in.data.x[0].size());
  if (!identity) {
    EXPECT_NEAR(static_cast<double>(kept) / total, 1.0 - p, 5 * std::sqrt(p * (1 - p) / total)) << "the mask's keep rate";
  }
  return r;
}

const OpSpec kDropout{.cases = dropout_cases,
                      .reference = dropout_reference,
                      .forward = {0, 1e-6},
                      .backward = {1e-6, 1e-6},
                      .layouts = {0, 0},
                      .cuda = {1e-6, 1e-6}};
KILN_BACKEND_OPS(Dropout, kDropout);

// ---- flatten -------------------------------------------------------------------------------

// Flatten's output is PyTorch's channel-major vector in every layout.
std::vector<OpCase> flatten_cases() {
  return {{.name = "3x4x5", .graph = one_op_graph(layers::flatten(), Shape::chw(3, 4, 5)), .n = 2},
          {.name = "odd_5x3x1", .graph = one_op_graph(layers::flatten(), Shape::chw(5, 3, 1)), .n = 3},
          {.name = "1x1_map", .graph = one_op_graph(layers::flatten(), Shape::chw(6, 1, 1)), .n = 2},
          {.name = "partial_batch_1_of_3", .graph = one_op_graph(layers::flatten(), Shape::chw(2, 3, 3)), .n = 1,
           .capacity = 3}};
}

OpRef flatten_reference(const RefInput& in) {
  return {.y = widen(in.data.x[0]), .dx = {widen(in.data.dy)}, .grads = {}, .params = {}};
}

const OpSpec kFlatten{.cases = flatten_cases,
                      .reference = flatten_reference,
                      .forward = {0, 0},
                      .backward = {0, 0},
                      .layouts = {0, 0},
                      .cuda = {0, 0}};
KILN_BACKEND_OPS(Flatten, kFlatten);

}  // namespace
}  // namespace kiln::test::ops
