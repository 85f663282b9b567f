#include "train/init.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <numeric>
#include <vector>

#include "math/augment.hpp"

namespace kiln::detail {

namespace {

const Param& param_of(const Graph& g, const Layer& layer, ParamRole role) {
  for (int p : layer.params)
    if (g.params()[static_cast<std::size_t>(p)].role == role) return g.params()[static_cast<std::size_t>(p)];
  return g.params()[static_cast<std::size_t>(layer.params[0])];
}

std::size_t index_of(const Graph& g, const Param& p) { return static_cast<std::size_t>(&p - g.params().data()); }

}  // namespace

void symmetric_eigen(std::vector<double> a, int n, std::vector<double>& values, std::vector<double>& vectors) {
  std::vector<double> v(static_cast<std::size_t>(n * n), 0.0);
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i * n + i)] = 1.0;
  auto at = [&](std::vector<double>& m, int r, int c) -> double& { return m[static_cast<std::size_t>(r * n + c)]; };
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) off += at(a, p, q) * at(a, p, q);
    if (off < 1e-30) break;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        const double apq = at(a, p, q);
        if (std::fabs(apq) < 1e-300) continue;
        // The rotation that zeroes a[p][q] (Golub & Van Loan, the symmetric Schur decomposition).
        const double tau = (at(a, q, q) - at(a, p, p)) / (2.0 * apq);
        const double t = (tau >= 0 ? 1.0 : -1.0) / (std::fabs(tau) + std::sqrt(1.0 + tau * tau));
        const double c = 1.0 / std::sqrt(1.0 + t * t), s = t * c;
        for (int k = 0; k < n; ++k) {
          const double akp = at(a, k, p), akq = at(a, k, q);
          at(a, k, p) = c * akp - s * akq;
          at(a, k, q) = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {
          const double apk = at(a, p, k), aqk = at(a, q, k);
          at(a, p, k) = c * apk - s * aqk;
          at(a, q, k) = s * apk + c * aqk;
        }
        for (int k = 0; k < n; ++k) {
          const double vkp = at(v, k, p), vkq = at(v, k, q);
          at(v, k, p) = c * vkp - s * vkq;
          at(v, k, q) = s * vkp + c * vkq;
        }
      }
  }
  std::vector<int> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int i, int j) { return at(a, i, i) > at(a, j, j); });
  values.clear();
  vectors.assign(static_cast<std::size_t>(n * n), 0.0);
  for (int r = 0; r < n; ++r) {
    const int i = order[static_cast<std::size_t>(r)];
    values.push_back(at(a, i, i));
    for (int k = 0; k < n; ++k) vectors[static_cast<std::size_t>(r * n + k)] = at(v, k, i);  // column i of V
  }
}

std::vector<float> whitening_filters(const Dataset& data, const InputTransform& t, std::int64_t kh, std::int64_t kw,
                                     std::int64_t images, double eps) {
  const int C = static_cast<int>(data.sample.c), H = static_cast<int>(data.sample.h), W = static_cast<int>(data.sample.w);
  const int n = static_cast<int>(C * kh * kw);
  const std::int64_t count = std::min(images, data.size());
  if (count < 1) throw UsageError("init: whiten needs training images");
  // The second moment of every patch, in PyTorch's (c, kh, kw) order, accumulated in double.
  std::vector<double> cov(static_cast<std::size_t>(n * n), 0.0);
  std::vector<double> pixels(static_cast<std::size_t>(C * H * W)), patch(static_cast<std::size_t>(n));
  std::int64_t patches = 0;
  for (std::int64_t i = 0; i < count; ++i) {
    for (int c = 0; c < C; ++c)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x)
          pixels[static_cast<std::size_t>((c * H + y) * W + x)] =
              math::augmented_pixel(data.image(i), H, W, c, y, x, {}, t.pad, t.mean[static_cast<std::size_t>(c)],
                                    t.inv_std[static_cast<std::size_t>(c)]);
    for (int y = 0; y + kh <= H; ++y)
      for (int x = 0; x + kw <= W; ++x) {
        int k = 0;
        for (int c = 0; c < C; ++c)
          for (int dy = 0; dy < kh; ++dy)
            for (int dx = 0; dx < kw; ++dx) patch[static_cast<std::size_t>(k++)] = pixels[static_cast<std::size_t>((c * H + y + dy) * W + x + dx)];
        for (int r = 0; r < n; ++r)
          for (int s = r; s < n; ++s) cov[static_cast<std::size_t>(r * n + s)] += patch[static_cast<std::size_t>(r)] * patch[static_cast<std::size_t>(s)];
        ++patches;
      }
  }
  for (int r = 0; r < n; ++r)
    for (int s = r; s < n; ++s) {
      cov[static_cast<std::size_t>(r * n + s)] /= static_cast<double>(patches);
      cov[static_cast<std::size_t>(s * n + r)] = cov[static_cast<std::size_t>(r * n + s)];
    }
  std::vector<double> values, vectors;
  symmetric_eigen(cov, n, values, vectors);
  std::vector<float> filters(static_cast<std::size_t>(2 * n * n));
  for (int i = 0; i < n; ++i) {
    const double scale = 1.0 / std::sqrt(values[static_cast<std::size_t>(i)] + eps);
    for (int k = 0; k < n; ++k) {
      const auto v = static_cast<float>(vectors[static_cast<std::size_t>(i * n + k)] * scale);
      filters[static_cast<std::size_t>(i * n + k)] = v;
      filters[static_cast<std::size_t>((n + i) * n + k)] = -v;
    }
  }
  return filters;
}

void init_whitening(CompiledPlan& plan, const Dataset& data, std::int64_t images, double eps) {
  const Graph& g = plan.graph();
  for (const Layer& layer : g.layers()) {
    if (layer.op != OpKind::conv || layer.attrs.init != Attrs::Init::whiten) continue;
    if (layer.inputs[0] != 0)
      throw UsageError(fmt::format("layer '{}': init: whiten computes its filters from the images, so its input must be the "
                                   "model input",
                                   layer.name));
    const Param& w = param_of(g, layer, ParamRole::weight);
    plan.write_param(index_of(g, w), whitening_filters(data, plan.train_input(), layer.attrs.kernel.h, layer.attrs.kernel.w, images, eps));
  }
}

}  // namespace kiln::detail
