// BackendOps for batchnorm: a direct reference of PyTorch's BatchNorm2d / BatchNorm1d (batch
// statistics and the running statistics' update in training, running statistics in
// evaluation; fixed or frozen scale and shift).
#include <cmath>

#include "backend_ops.hpp"

namespace kiln::test::ops {
namespace {

enum : std::size_t { kWeight, kBias, kMean, kVar };

OpCase bn_case(std::string name, Shape in, LayerDef bn, bool train, std::int64_t n, std::int64_t capacity = 0) {
  if (in.is_image()) return {.name = std::move(name), .graph = one_op_graph(bn, in), .n = n, .capacity = capacity, .train = train};
  GraphBuilder b("t", Shape::chw(2, 3, 3), 10);
  b.add(layers::flatten()).add(layers::linear(in.c)).add(bn.named("op")).add(layers::linear(10));
  return {.name = std::move(name), .graph = b.build(), .n = n, .capacity = capacity, .train = train};
}

OpCase with_tweak(OpCase c, std::function<void(OpData&)> tweak) {
  c.tweak = std::move(tweak);
  return c;
}

std::vector<OpCase> bn_cases() {
  return {bn_case("train_5x4x4_n4", Shape::chw(5, 4, 4), layers::batchnorm(), true, 4),
          bn_case("eval_running_stats", Shape::chw(3, 5, 3), layers::batchnorm(), false, 3),
          bn_case("train_fixed_weight_and_bias", Shape::chw(4, 3, 3), layers::batchnorm().weight(false).bias(false), true, 2),
          // A fixed scale still multiplies, whatever it holds.
          with_tweak(bn_case("train_fixed_weight_not_one", Shape::chw(3, 4, 4), layers::batchnorm().weight(false), true, 2),
                     [](OpData& d) { d.params[kWeight] = {1.5f, 0.5f, 2.0f}; }),
          bn_case("eval_fixed_bias", Shape::chw(4, 3, 3), layers::batchnorm().bias(false), false, 2),
          bn_case("train_frozen", Shape::chw(3, 4, 4), layers::batchnorm().momentum(0.3).frozen(), true, 2),
          bn_case("train_vector_1d", Shape::vec(6), layers::batchnorm(), true, 5),
          bn_case("eval_vector_1d", Shape::vec(6), layers::batchnorm(), false, 3),
          bn_case("train_odd_plane_eps", Shape::chw(3, 7, 5), layers::batchnorm().eps(1e-3).momentum(0.2), true, 3),
          bn_case("partial_batch_3_of_8", Shape::chw(4, 3, 3), layers::batchnorm(), true, 3, 8)};
}

// y = (x - mean) / sqrt(var + eps) * weight + bias over the n*H*W values of each channel; in
// training the biased variance normalizes and the unbiased one goes into running_var.
OpRef bn_reference(const RefInput& in) {
  const Shape s = in.layer.shape;
  const Attrs& a = in.layer.attrs;
  const std::int64_t plane = s.h * s.w, m = in.n * plane;
  const std::vector<float>& x = in.data.x[0];
  const std::vector<std::vector<float>>& p = in.data.params;
  OpRef r;
  r.y.assign(x.size(), 0.0);
  r.dx.assign(1, std::vector<double>(x.size(), 0.0));
  r.grads.assign(4, {});
  r.params.assign(4, {});
  auto e_at = [&](std::int64_t b, std::int64_t c, std::int64_t j) { return static_cast<std::size_t>((b * s.c + c) * plane + j); };
  for (std::int64_t c = 0; c < s.c; ++c) {
    const auto cc = static_cast<std::size_t>(c);
    double mean = p[kMean][cc], var = p[kVar][cc];
    if (in.train) {
      double sum = 0, sq = 0;
      for (std::int64_t b = 0; b < in.n; ++b)
        for (std::int64_t j = 0; j < plane; ++j) sum += x[e_at(b, c, j)];
      mean = sum / static_cast<double>(m);
      for (std::int64_t b = 0; b < in.n; ++b)
        for (std::int64_t j = 0; j < plane; ++j) sq += (x[e_at(b, c, j)] - mean) * (x[e_at(b, c, j)] - mean);
      var = sq / static_cast<double>(m);
      r.params[kMean].push_back((1 - a.momentum) * p[kMean][cc] + a.momentum * mean);
      r.params[kVar].push_back((1 - a.momentum) * p[kVar][cc] +
                               a.momentum * var * static_cast<double>(m) / static_cast<double>(m - 1));
    }
    const double invstd = 1 / std::sqrt(var + a.eps), w = p[kWeight][cc], bias = p[kBias][cc];
    double sum_dy = 0, sum_dy_xhat = 0;
    for (std::int64_t b = 0; b < in.n; ++b)
      for (std::int64_t j = 0; j < plane; ++j) {
        const std::size_t e = e_at(b, c, j);
        const double xhat = (x[e] - mean) * invstd;
        r.y[e] = xhat * w + bias;
        sum_dy += in.data.dy[e];
        sum_dy_xhat += in.data.dy[e] * xhat;
      }
    r.grads[kWeight].push_back(sum_dy_xhat);
    r.grads[kBias].push_back(sum_dy);
    for (std::int64_t b = 0; b < in.n; ++b)
      for (std::int64_t j = 0; j < plane; ++j) {
        const std::size_t e = e_at(b, c, j);
        const double xhat = (x[e] - mean) * invstd, dy = in.data.dy[e];
        r.dx[0][e] = in.train ? w * invstd * (dy - sum_dy / static_cast<double>(m) - xhat * sum_dy_xhat / static_cast<double>(m))
                              : w * invstd * dy;
      }
  }
  return r;
}

// Sums over n*H*W values per channel, in whatever order the layout gives.
const OpSpec kBatchnorm{.cases = bn_cases,
                        .reference = bn_reference,
                        .forward = {1e-5, 1e-5},
                        .backward = {1e-5, 1e-4},
                        .layouts = {1e-5, 1e-5},
                        .cuda = {1e-4, 1e-4}};
KILN_BACKEND_OPS(BatchNorm, kBatchnorm);

}  // namespace
}  // namespace kiln::test::ops
