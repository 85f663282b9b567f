#pragma once

// Runs one layer's CPU forward and backward outside any executor, on random inputs and
// parameters, for op tests: compare against a double-precision reference and against
// finite differences of the scalar objective L = sum(y * w) (so dy = w).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "kiln/kiln.hpp"

namespace kiln::test {

class OpHarness {
 public:
  // `graph` holds the layer under test, `name`; n samples; values from a fixed-seed normal.
  OpHarness(Graph graph, const std::string& name, std::int64_t n, std::uint32_t seed = 1)
      : graph_(std::move(graph)), rng_(seed) {
    layer_ = graph_.find(name);
    if (!layer_) throw std::runtime_error("OpHarness: no layer named " + name);
    const auto& kernels = detail::cpu_op(layer_->op);
    cpu.layer = layer_;
    cpu.layers = graph_.layers();
    cpu.n = n;
    for (std::size_t i = 0; i < layer_->inputs.size(); ++i) {
      x.push_back(random(n * cpu.in_shape(i).elements()));
      dx.emplace_back(static_cast<std::size_t>(n * cpu.in_shape(i).elements()), 0.0f);
    }
    y.assign(static_cast<std::size_t>(n * layer_->shape.elements()), 0.0f);
    dy = random(n * layer_->shape.elements());
    for (int p : layer_->params) {
      const Param& param = graph_.params()[static_cast<std::size_t>(p)];
      std::vector<float> v = random(param.elements);
      if (param.role == ParamRole::running_var)
        for (auto& e : v) e = 0.5f + std::fabs(e);
      // A fixed batchnorm scale or shift holds 1 or 0 in the engine.
      if (!param.trainable && !param.buffer) std::fill(v.begin(), v.end(), param.role == ParamRole::weight ? 1.0f : 0.0f);
      params.push_back(v);
      grads.emplace_back(static_cast<std::size_t>(param.elements), 0.0f);
    }
    if (kernels.state_floats) state.assign(static_cast<std::size_t>(kernels.state_floats(*layer_, n)), 0.0f);
    if (kernels.workspace_floats)
      workspace.assign(static_cast<std::size_t>(kernels.workspace_floats(*layer_, graph_.layers(), n, cpu.layout)), 0.0f);
    bind();
  }

  const Layer& layer() const { return *layer_; }
  const Graph& graph() const { return graph_; }

  // Points the CpuLayer at the buffers (call again after resizing anything).
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
      const Param& param = graph_.params()[static_cast<std::size_t>(layer_->params[i])];
      cpu.params.push_back(params[i].data());
      cpu.grads.push_back(param.trainable ? grads[i].data() : nullptr);
    }
    cpu.state = state.empty() ? nullptr : state.data();
    cpu.workspace = workspace.empty() ? nullptr : workspace.data();
  }

  void forward(bool train = true) {
    cpu.train = train;
    detail::cpu_op(layer_->op).forward(cpu);
  }
  void backward() { detail::cpu_op(layer_->op).backward(cpu); }

  // L = sum(y * dy) after a forward (in double).
  double objective(bool train = true) {
    forward(train);
    double l = 0;
    for (std::size_t i = 0; i < y.size(); ++i) l += static_cast<double>(y[i]) * dy[i];
    return l;
  }

  // Central finite difference of L with respect to `*v` (restores it).
  double numeric_grad(float* v, float eps, bool train = true) {
    float saved = *v;
    *v = saved + eps;
    double plus = objective(train);
    *v = saved - eps;
    double minus = objective(train);
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
  Graph graph_;
  const Layer* layer_ = nullptr;
  std::mt19937 rng_;
};

// |a - b| <= atol + rtol * |b|, reporting the worst element.
inline void expect_close(const std::vector<double>& ref, const float* got, double atol, double rtol, const std::string& what) {
  std::size_t worst = 0;
  double worst_excess = -1;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    double err = std::fabs(static_cast<double>(got[i]) - ref[i]) - (atol + rtol * std::fabs(ref[i]));
    if (!(err <= 0.0) && std::isnan(err)) err = std::numeric_limits<double>::infinity();  // NaN never passes
    if (err > worst_excess) worst_excess = err, worst = i;
  }
  EXPECT_LE(worst_excess, 0.0) << what << ": element " << worst << " is " << got[worst] << ", reference " << ref[worst]
                               << " (atol " << atol << ", rtol " << rtol << ")";
}

}  // namespace kiln::test
