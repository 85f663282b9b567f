#pragma once

// Runs one layer's CPU forward and backward outside any executor, on random inputs and
// parameters, in NCHW or NHWC memory: the harness of the BackendOps suite (backend_ops.hpp)
// and of the op tests that check something else (thread counts, GEMM kernels, PyTorch's
// edge cases). The objective for finite differences is L = sum(y * dy).
//
// x, dx, y, dy hold the plan's memory layout (cpu.layout) for `capacity` samples, of which
// the first n are the batch; load() and logical() convert from and to logical NCHW.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "kiln/kiln.hpp"
#include "math/layout.hpp"

namespace kiln::test {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// NCHW data of d's size in d's layout (a copy when d is NCHW), and back.
inline std::vector<float> to_layout(const std::vector<float>& nchw, const math::Dims4& d) {
  std::vector<float> out(nchw.size());
  std::size_t i = 0;
  for (std::int64_t n = 0; n < d.n; ++n)
    for (std::int64_t c = 0; c < d.c; ++c)
      for (std::int64_t h = 0; h < d.h; ++h)
        for (std::int64_t w = 0; w < d.w; ++w) out[static_cast<std::size_t>(d.at(n, c, h, w))] = nchw[i++];
  return out;
}

inline std::vector<float> from_layout(const float* v, const math::Dims4& d) {
  std::vector<float> out(static_cast<std::size_t>(d.count()));
  std::size_t i = 0;
  for (std::int64_t n = 0; n < d.n; ++n)
    for (std::int64_t c = 0; c < d.c; ++c)
      for (std::int64_t h = 0; h < d.h; ++h)
        for (std::int64_t w = 0; w < d.w; ++w) out[i++] = v[static_cast<std::size_t>(d.at(n, c, h, w))];
  return out;
}

inline std::vector<double> widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// |got - ref| <= atol + rtol * |ref| for every element of a logical NCHW tensor of size `d`
// (a vector of features: h = w = 1), NaN only where the reference has NaN. On failure:
// how many differ, the worst with its (n, c, h, w), and the first few.
inline void expect_close(const std::vector<double>& ref, const std::vector<float>& got, double atol, double rtol,
                         const std::string& what, const math::Dims4& d = {}) {
  ASSERT_EQ(ref.size(), got.size()) << what << ": sizes differ";
  auto where = [&](std::size_t i) {
    std::ostringstream s;
    s << "[" << i << "]";
    if (d.c > 0 && d.count() == static_cast<std::int64_t>(ref.size())) {
      const math::Index4 x = math::index_of({d.n, d.c, d.h, d.w, false}, static_cast<std::int64_t>(i));
      s << " (n " << x.n << ", c " << x.c << ", h " << x.h << ", w " << x.w << ")";
    }
    return s.str();
  };
  std::size_t bad = 0, worst = 0;
  double worst_excess = -1;
  std::ostringstream first;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double want = ref[i], have = got[i];
    double excess = 0;
    if (std::isnan(want) || std::isnan(have))
      excess = std::isnan(want) && std::isnan(have) ? -1 : std::numeric_limits<double>::infinity();
    else
      excess = std::fabs(have - want) - (atol + rtol * std::fabs(want));
    if (excess > 0) {
      if (bad < 4) first << "\n    " << where(i) << ": got " << have << ", want " << want;
      ++bad;
      if (excess > worst_excess) worst_excess = excess, worst = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << ref.size() << " elements differ (atol " << atol << ", rtol "
                     << rtol << "); worst " << where(worst) << ": got " << got[worst] << ", want " << ref[worst]
                     << "; first:" << first.str();
}

// The same over the first ref.size() floats at `got`.
inline void expect_close(const std::vector<double>& ref, const float* got, double atol, double rtol, const std::string& what,
                         const math::Dims4& d = {}) {
  expect_close(ref, std::vector<float>(got, got + ref.size()), atol, rtol, what, d);
}

class OpHarness {
 public:
  // `graph` holds the layer under test, `name`; n samples, buffers for `capacity` (0: n);
  // values from a fixed-seed normal.
  OpHarness(Graph graph, const std::string& name, std::int64_t n, std::uint32_t seed = 1, Layout layout = Layout::nchw,
            std::int64_t capacity = 0)
      : graph_(std::move(graph)), rng_(seed) {
    layer_ = graph_.find(name);
    if (!layer_) throw std::runtime_error("OpHarness: no layer named " + name);
    capacity = std::max(capacity, n);
    const auto& kernels = detail::cpu_op(layer_->op);
    cpu.layer = layer_;
    cpu.layers = graph_.layers();
    cpu.n = n;
    cpu.layout = layout;
    for (std::size_t i = 0; i < layer_->inputs.size(); ++i) {
      x.push_back(random(capacity * cpu.in_shape(i).elements()));
      dx.emplace_back(static_cast<std::size_t>(capacity * cpu.in_shape(i).elements()), 0.0f);
    }
    y.assign(static_cast<std::size_t>(capacity * layer_->shape.elements()), 0.0f);
    dy = random(capacity * layer_->shape.elements());
    for (int p : layer_->params) {
      const Param& param = graph_.params()[static_cast<std::size_t>(p)];
      std::vector<float> v = random(param.elements);
      if (param.role == ParamRole::running_var)
        for (auto& e : v) e = 0.5f + std::fabs(e);
      // A fixed batchnorm scale or shift holds 1 or 0 in the engine.
      if (!param.trainable && !param.buffer) std::fill(v.begin(), v.end(), param.role == ParamRole::weight ? 1.0f : 0.0f);
      params.push_back(v);
      grads.emplace_back(static_cast<std::size_t>(param.elements), 0.0f);
      cpu.param_elements.push_back(param.elements);
    }
    if (kernels.state_floats) state.assign(static_cast<std::size_t>(kernels.state_floats(*layer_, capacity)), 0.0f);
    if (kernels.workspace_floats)
      workspace.assign(static_cast<std::size_t>(kernels.workspace_floats(*layer_, graph_.layers(), capacity, layout)), 0.0f);
    bind();
  }

  const Layer& layer() const { return *layer_; }
  const Graph& graph() const { return graph_; }
  const Param& param(std::size_t i) const { return graph_.params()[static_cast<std::size_t>(layer_->params[i])]; }

  // Points the CpuLayer at the buffers (call again after resizing anything): every dx
  // written, not accumulated; gradients for trainable parameters only.
  void bind() {
    cpu.x.clear();
    cpu.dx.clear();
    for (std::size_t i = 0; i < x.size(); ++i) {
      cpu.x.push_back(x[i].data());
      cpu.dx.push_back(dx[i].data());
    }
    cpu.accumulate.assign(x.size(), false);
    cpu.y = y.data();
    cpu.dy = dy.data();
    cpu.params.clear();
    cpu.grads.clear();
    for (std::size_t i = 0; i < params.size(); ++i) {
      cpu.params.push_back(params[i].data());
      cpu.grads.push_back(param(i).trainable ? grads[i].data() : nullptr);
    }
    cpu.state = state.empty() ? nullptr : state.data();
    cpu.workspace = workspace.empty() ? nullptr : workspace.data();
    cpu.workspace_floats = static_cast<std::int64_t>(workspace.size());
  }

  // How the batch's tensors lie in memory.
  math::Dims4 in_dims(std::size_t i = 0) const { return cpu.in_dims(i); }
  math::Dims4 out_dims() const { return cpu.out_dims(); }

  // Logical NCHW values of the batch into the buffers (beyond n samples nothing changes).
  void load_input(std::size_t i, const std::vector<float>& logical) { place(logical, in_dims(i), x[i]); }
  void load_dy(const std::vector<float>& logical) { place(logical, out_dims(), dy); }
  void load_dx(std::size_t i, const std::vector<float>& logical) { place(logical, in_dims(i), dx[i]); }
  // The batch's part of a buffer laid out as `d`, in logical NCHW order.
  static std::vector<float> logical(const std::vector<float>& memory, const math::Dims4& d) {
    return from_layout(memory.data(), d);
  }
  std::vector<float> y_logical() const { return logical(y, out_dims()); }
  std::vector<float> dx_logical(std::size_t i) const { return logical(dx[i], in_dims(i)); }

  void forward(bool train = true) {
    cpu.train = train;
    detail::run_forward(cpu);  // the op's kernel, then its output rounded to cpu.dtype
  }
  void backward() { detail::run_backward(cpu); }

  // L = sum(y * dy) over the batch after a forward (in double).
  double objective(bool train = true) {
    forward(train);
    double l = 0;
    const auto count = static_cast<std::size_t>(out_dims().count());
    for (std::size_t i = 0; i < count; ++i) l += static_cast<double>(y[i]) * dy[i];
    return l;
  }

  // Central finite difference of L with respect to `*v` (restores it).
  double numeric_grad(float* v, float eps, bool train = true) {
    const float saved = *v;
    *v = saved + eps;
    const double plus = objective(train);
    *v = saved - eps;
    const double minus = objective(train);
    *v = saved;
    return (plus - minus) / (2.0 * static_cast<double>(eps));
  }

  std::vector<float> random(std::int64_t count) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> v(static_cast<std::size_t>(count));
    for (auto& e : v) e = normal(rng_);
    return v;
  }

  detail::CpuLayer cpu;
  std::vector<std::vector<float>> x, dx, params, grads;
  std::vector<float> y, dy, state, workspace;

 private:
  static void place(const std::vector<float>& logical, const math::Dims4& d, std::vector<float>& memory) {
    if (static_cast<std::int64_t>(logical.size()) != d.count())
      throw std::logic_error("OpHarness: " + std::to_string(logical.size()) + " values for a tensor of " +
                             std::to_string(d.count()));
    const std::vector<float> laid = to_layout(logical, d);
    std::copy(laid.begin(), laid.end(), memory.begin());
  }

  Graph graph_;
  const Layer* layer_ = nullptr;
  std::mt19937 rng_;
};

}  // namespace kiln::test
