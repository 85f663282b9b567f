// BackendOps for groupnorm: a direct reference of PyTorch's GroupNorm (affine), each
// (sample, group) normalized by its own mean and biased variance, with its gradients written
// out; images and vectors of features, one group, one group per channel, frozen parameters.
#include <cmath>

#include "backend_ops.hpp"

namespace kiln::test::ops {
namespace {

enum : std::size_t { kWeight, kBias };

OpCase gn_case(std::string name, Shape in, LayerDef gn, std::int64_t n, std::int64_t capacity = 0) {
  if (in.is_image()) return {.name = std::move(name), .graph = one_op_graph(gn, in), .n = n, .capacity = capacity};
  GraphBuilder b("t", Shape::chw(2, 3, 3), 10);
  b.add(layers::flatten()).add(layers::linear(in.c)).add(gn.named("op")).add(layers::linear(10));
  return {.name = std::move(name), .graph = b.build(), .n = n, .capacity = capacity};
}

std::vector<OpCase> gn_cases() {
  return {gn_case("groups_4_of_8x5x6", Shape::chw(8, 5, 6), layers::groupnorm(4), 3),
          gn_case("one_group_eps", Shape::chw(6, 4, 3), layers::groupnorm(1).eps(1e-3), 2),
          gn_case("group_per_channel", Shape::chw(5, 3, 4), layers::groupnorm(5), 2),
          gn_case("frozen", Shape::chw(4, 3, 3), layers::groupnorm(2).frozen(), 2),
          gn_case("vector_features", Shape::vec(6), layers::groupnorm(3), 4),
          gn_case("partial_batch_2_of_5", Shape::chw(4, 3, 3), layers::groupnorm(2), 2, 5)};
}

// y = (x - mean) / sqrt(var + eps) * weight + bias over the (C/G)*H*W values of each (sample,
// group); dx = invstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * weight.
OpRef gn_reference(const RefInput& in) {
  const Shape s = in.layer.shape;
  const std::int64_t groups = in.layer.attrs.groups, cpg = s.c / groups, hw = s.h * s.w, m = cpg * hw;
  const double eps = in.layer.attrs.eps;
  const std::vector<float>& x = in.data.x[0];
  const std::vector<float>& dy = in.data.dy;
  const std::vector<float>& w = in.data.params[kWeight];
  const std::vector<float>& b = in.data.params[kBias];
  OpRef r;
  r.y.assign(x.size(), 0.0);
  r.dx.assign(1, std::vector<double>(x.size(), 0.0));
  r.grads.assign(2, std::vector<double>(static_cast<std::size_t>(s.c), 0.0));
  r.params.assign(2, {});
  for (std::int64_t i = 0; i < in.n; ++i)
    for (std::int64_t g = 0; g < groups; ++g) {
      const auto base = static_cast<std::size_t>((i * s.c + g * cpg) * hw);  // a group is contiguous in NCHW
      const auto k_of = [&](std::int64_t j) { return base + static_cast<std::size_t>(j); };
      const auto c_of = [&](std::int64_t j) { return static_cast<std::size_t>(g * cpg + j / hw); };
      double mean = 0, var = 0;
      for (std::int64_t j = 0; j < m; ++j) mean += x[k_of(j)];
      mean /= static_cast<double>(m);
      for (std::int64_t j = 0; j < m; ++j) var += (x[k_of(j)] - mean) * (x[k_of(j)] - mean);
      var /= static_cast<double>(m);
      const double invstd = 1 / std::sqrt(var + eps);
      double sum_g = 0, sum_g_xhat = 0;
      for (std::int64_t j = 0; j < m; ++j) {
        const double xhat = (x[k_of(j)] - mean) * invstd, grad = static_cast<double>(dy[k_of(j)]) * w[c_of(j)];
        r.y[k_of(j)] = xhat * w[c_of(j)] + b[c_of(j)];
        r.grads[kWeight][c_of(j)] += dy[k_of(j)] * xhat;
        r.grads[kBias][c_of(j)] += dy[k_of(j)];
        sum_g += grad;
        sum_g_xhat += grad * xhat;
      }
      for (std::int64_t j = 0; j < m; ++j) {
        const double xhat = (x[k_of(j)] - mean) * invstd, grad = static_cast<double>(dy[k_of(j)]) * w[c_of(j)];
        r.dx[0][k_of(j)] = invstd * (grad - sum_g / static_cast<double>(m) - xhat * sum_g_xhat / static_cast<double>(m));
      }
    }
  if (in.layer.attrs.frozen) r.grads.assign(2, {});
  return r;
}

// Sums in double in (channel, h, w) order in either layout, so NHWC is NCHW bit for bit; CUDA
// sums in a tree and keeps no state (it recomputes the statistics).
const OpSpec kGroupnorm{.cases = gn_cases,
                        .reference = gn_reference,
                        .forward = {1e-5, 1e-5},
                        .backward = {1e-4, 1e-4},
                        .layouts = {0, 0},
                        .cuda = {1e-4, 1e-4}};
KILN_BACKEND_OPS(Groupnorm, kGroupnorm);

}  // namespace
}  // namespace kiln::test::ops
