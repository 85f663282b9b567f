// The BackendOps passes on the CPU (backend_ops.hpp): the loop over an op's cases, the
// comparison with its reference, finite differences, and layout against layout.
#include "backend_ops.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <iostream>
#include <optional>

#include "backend/cpu_ops.hpp"
#include "math/half.hpp"
#include "math/rng.hpp"

namespace kiln::test::ops {

Graph one_op_graph(LayerDef op, Shape input) {
  GraphBuilder b("t", input, 10);
  const bool vector_out = op.op == OpKind::flatten;
  b.add(op.named("op"));
  if (!vector_out) b.add(layers::flatten());
  b.add(layers::linear(10));
  return b.build();
}

std::uint64_t dropout_key(const Layer& layer, std::uint64_t step) {
  return math::stream_key(step, math::kStreamDropout, static_cast<std::uint64_t>(layer.index));
}

namespace {

const Layer& op_layer(const OpCase& c) {
  const Layer* layer = c.graph.find("op");
  if (!layer) throw std::logic_error("BackendOps case " + c.name + ": no layer named op");
  return *layer;
}

Shape in_shape(const Graph& g, const Layer& layer, std::size_t i) {
  return g.layers()[static_cast<std::size_t>(layer.inputs[i])].shape;
}

math::Dims4 logical_dims(const Shape& s, std::int64_t n) { return {n, s.c, s.h, s.w, false}; }

std::uint32_t seed_of(const std::string& name) { return static_cast<std::uint32_t>(std::hash<std::string>{}(name)); }

void load(OpHarness& h, const OpData& d) {
  for (std::size_t i = 0; i < d.x.size(); ++i) h.load_input(i, d.x[i]);
  h.load_dy(d.dy);
  h.params = d.params;
  h.bind();
}

RefInput ref_input(const OpCase& c, const Layer& layer, const OpData& d) {
  std::vector<Shape> in;
  for (std::size_t i = 0; i < layer.inputs.size(); ++i) in.push_back(in_shape(c.graph, layer, i));
  return {layer, in, c.n, c.train, dropout_key(layer), d};
}

// Runs `body` on every case the CPU supports in `v`; skips the test when it supports none.
void for_each_case(const OpSpec& spec, const Variant& v, const std::function<void(const OpCase&, const Layer&)>& body) {
  if (v.cpu_conv == CpuConv::onednn && !has_onednn()) GTEST_SKIP() << "this build of kiln has no oneDNN";
  int ran = 0;
  std::string refused, why_not;
  for (const OpCase& c : spec.cases()) {
    SCOPED_TRACE("case " + c.name);
    const Layer& layer = op_layer(c);
    if (auto why = detail::cpu_op(layer.op).supports(layer, v.dtype, v.layout)) {
      refused += "\n  case " + c.name + ": " + *why;
      why_not = *why;
      continue;
    }
    body(c, layer);
    ++ran;
    if (::testing::Test::HasFatalFailure()) return;
  }
  if (ran == 0) GTEST_SKIP() << "the CPU refuses " << to_string(v.dtype) << " " << to_string(v.layout) << ": " << why_not;
  if (!refused.empty()) std::cout << "[  NOTE    ] cases the CPU refuses:" << refused << "\n";
}

std::vector<double> plus(const std::vector<float>& before, const std::vector<double>& ref) {
  std::vector<double> r(ref.size());
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = static_cast<double>(before[i] + static_cast<float>(ref[i]));
  return r;
}

// The part of a buffer past the batch (a partial batch's capacity) must stay as it was.
void expect_tail_untouched(const std::vector<float>& buffer, std::size_t batch_part, const std::string& what) {
  const auto written = std::count_if(buffer.begin() + static_cast<std::ptrdiff_t>(batch_part), buffer.end(),
                                     [](float v) { return !std::isnan(v); });
  EXPECT_EQ(written, 0) << what << ": " << written << " elements past the batch's " << batch_part << " were written";
}

}  // namespace

Tolerance dtype_tolerance(DType dtype, Tolerance fp32) {
  if (dtype == DType::f32) return fp32;
  const Tolerance half = dtype == DType::bf16 ? Tolerance{6e-2, 2e-2} : Tolerance{1e-2, 4e-3};
  return {std::max(fp32.atol, half.atol), std::max(fp32.rtol, half.rtol)};
}

std::vector<std::vector<float>> rounded(std::vector<std::vector<float>> values, DType dtype) {
  for (auto& v : values)
    for (float& e : v) e = math::round_to(dtype, e);
  return values;
}

OpData rounded(OpData d, const Layer& layer, DType dtype) {
  if (dtype == DType::f32) return d;
  d.x = rounded(std::move(d.x), dtype);
  d.dy = rounded({std::move(d.dy)}, dtype)[0];
  if (detail::params_in_dtype(layer)) d.params = rounded(std::move(d.params), dtype);
  return d;
}

namespace {

// In bf16 and fp16 every value a kernel writes is one the dtype holds: a rounding left out
// leaves fp32 values behind.
void expect_in_dtype(const std::vector<float>& values, DType dtype, const std::string& what) {
  if (dtype == DType::f32) return;
  std::size_t off = 0, first = 0;
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!std::isnan(values[i]) && math::round_to(dtype, values[i]) != values[i]) {
      if (off++ == 0) first = i;
    }
  EXPECT_EQ(off, 0u) << what << ": " << off << " values are not " << to_string(dtype) << " values (the first: [" << first
                     << "] = " << (values.empty() ? 0.0f : values[first]) << ")";
}

}  // namespace

const char* to_string(DxMode m) {
  return m == DxMode::overwrite ? "overwrite" : m == DxMode::accumulate ? "accumulate" : "null";
}

std::vector<std::vector<DxMode>> dx_passes(std::size_t inputs) {
  std::vector<DxMode> mixed(inputs);
  for (std::size_t k = 0; k < inputs; ++k)
    mixed[k] = k % 3 == 0 ? DxMode::accumulate : k % 3 == 1 ? DxMode::null : DxMode::overwrite;
  std::vector<std::vector<DxMode>> passes = {std::vector<DxMode>(inputs, DxMode::overwrite), mixed,
                                             std::vector<DxMode>(inputs, DxMode::null)};
  // Mixed never accumulates into input 1 (a two-input op's second, mul's gate): every input does.
  if (inputs > 1) passes.push_back(std::vector<DxMode>(inputs, DxMode::accumulate));
  return passes;
}

OpData random_data(const OpCase& c, const Graph& g) {
  const Layer& layer = *g.find("op");
  std::mt19937 rng(seed_of(c.name));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random = [&](std::size_t n) {
    std::vector<float> v(n);
    for (float& e : v) e = normal(rng);
    return v;
  };
  OpData d;
  for (std::size_t i = 0; i < layer.inputs.size(); ++i) d.x.push_back(random(count(in_shape(g, layer, i), c.n)));
  for (int p : layer.params) {
    const Param& param = g.params()[static_cast<std::size_t>(p)];
    std::vector<float> v = random(static_cast<std::size_t>(param.elements));
    if (param.role == ParamRole::running_var)
      for (float& e : v) e = 0.5f + std::fabs(e);
    // A fixed batchnorm scale or shift holds 1 or 0 in the engine.
    if (!param.trainable && !param.buffer) std::fill(v.begin(), v.end(), param.role == ParamRole::weight ? 1.0f : 0.0f);
    d.params.push_back(std::move(v));
  }
  d.dy = random(count(layer.shape, c.n));
  if (c.tweak) c.tweak(d);
  return d;
}

std::vector<std::vector<float>> random_dx(const OpCase& c, const Graph& g) {
  const Layer& layer = *g.find("op");
  std::mt19937 rng(seed_of(c.name) + 1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> before;
  for (std::size_t i = 0; i < layer.inputs.size(); ++i) {
    before.emplace_back(count(in_shape(g, layer, i), c.n));
    for (float& e : before.back()) e = normal(rng);
  }
  return before;
}

Outputs run_cpu(const OpCase& c, Layout layout, int threads, const OpData& data, const std::vector<DxMode>& modes,
                const std::vector<std::vector<float>>& before, CpuConv conv, DType dtype) {
  const Layer& layer = op_layer(c);
  OpHarness h(c.graph, "op", c.n, 1, layout, c.capacity);
  load(h, data);
  h.cpu.threads = threads;
  h.cpu.conv = conv;
  h.cpu.dtype = dtype;
  h.cpu.dropout_key = dropout_key(layer);
  Outputs out;
  h.forward(c.train);
  out.y = h.y_logical();
  out.params = h.params;
  for (std::size_t k = 0; k < modes.size(); ++k) {
    if (modes[k] == DxMode::accumulate) h.load_dx(k, before[k]);
    h.cpu.accumulate[k] = modes[k] == DxMode::accumulate;
    if (modes[k] == DxMode::null) h.cpu.dx[k] = nullptr;
  }
  h.backward();
  for (std::size_t k = 0; k < modes.size(); ++k)
    out.dx.push_back(modes[k] == DxMode::null ? std::vector<float>{} : h.dx_logical(k));
  for (std::size_t p = 0; p < h.params.size(); ++p)
    out.grads.push_back(h.cpu.grads[p] ? h.grads[p] : std::vector<float>{});
  return out;
}

void expect_outputs(const Outputs& want, const Outputs& got, const OpCase& c, Tolerance tol, const std::string& what) {
  const Layer& layer = op_layer(c);
  expect_close(widen(want.y), got.y, tol.atol, tol.rtol, what + " y", logical_dims(layer.shape, c.n));
  for (std::size_t k = 0; k < want.dx.size(); ++k)
    expect_close(widen(want.dx[k]), got.dx[k], tol.atol, tol.rtol, what + " dx" + std::to_string(k),
                 logical_dims(in_shape(c.graph, layer, k), c.n));
  for (std::size_t p = 0; p < want.grads.size(); ++p) {
    const std::string& name = c.graph.params()[static_cast<std::size_t>(layer.params[p])].name;
    expect_close(widen(want.grads[p]), got.grads[p], tol.atol, tol.rtol, what + " gradient of " + name);
    expect_close(widen(want.params[p]), got.params[p], tol.atol, tol.rtol, what + " " + name + " after forward");
  }
}

void check_forward(const OpSpec& spec, const Variant& v) {
  for_each_case(spec, v, [&](const OpCase& c, const Layer& layer) {
    const OpData d = rounded(random_data(c, c.graph), layer, v.dtype);
    const OpRef r = spec.reference(ref_input(c, layer, d));
    const Tolerance tol = dtype_tolerance(v.dtype, spec.forward);
    OpHarness h(c.graph, "op", c.n, 1, v.layout, c.capacity);
    h.cpu.conv = v.cpu_conv;
    h.cpu.dtype = v.dtype;
    load(h, d);
    h.cpu.dropout_key = dropout_key(layer);
    std::fill(h.y.begin(), h.y.end(), kNaN);
    h.forward(c.train);
    expect_close(r.y, h.y_logical(), tol.atol, tol.rtol, "y", logical_dims(layer.shape, c.n));
    expect_in_dtype(h.y_logical(), v.dtype, "y");
    expect_tail_untouched(h.y, count(layer.shape, c.n), "y");
    for (std::size_t p = 0; p < d.params.size(); ++p) {
      const std::string& name = h.param(p).name;
      if (p < r.params.size() && !r.params[p].empty())
        expect_close(r.params[p], h.params[p], tol.atol, tol.rtol, name + " after forward");
      else
        EXPECT_EQ(h.params[p], d.params[p]) << name << " changed in forward";
    }
  });
}

void check_backward(const OpSpec& spec, const Variant& v) {
  for_each_case(spec, v, [&](const OpCase& c, const Layer& layer) {
    const OpData d = rounded(random_data(c, c.graph), layer, v.dtype);
    const OpRef r = spec.reference(ref_input(c, layer, d));
    const std::vector<std::vector<float>> before = rounded(random_dx(c, c.graph), v.dtype);
    const detail::BackwardNeeds needs = detail::op_def(layer.op).backward_needs(layer);
    const Tolerance tol = dtype_tolerance(v.dtype, spec.backward);
    for (const std::vector<DxMode>& modes : dx_passes(layer.inputs.size())) {
      SCOPED_TRACE(std::string("dx ") + to_string(modes[0]) + (modes.size() > 1 ? ", ..." : ""));
      OpHarness h(c.graph, "op", c.n, 1, v.layout, c.capacity);
      h.cpu.conv = v.cpu_conv;
      h.cpu.dtype = v.dtype;
      load(h, d);
      h.cpu.dropout_key = dropout_key(layer);
      h.forward(c.train);
      // Backward may read only what the plan keeps for it.
      if (!needs.input)
        for (auto& x : h.x) std::fill(x.begin(), x.end(), kNaN);
      if (!needs.output) std::fill(h.y.begin(), h.y.end(), kNaN);
      for (auto& g : h.grads) std::fill(g.begin(), g.end(), kNaN);
      for (std::size_t k = 0; k < modes.size(); ++k) {
        std::fill(h.dx[k].begin(), h.dx[k].end(), modes[k] == DxMode::null ? 7.0f : kNaN);
        if (modes[k] == DxMode::accumulate) h.load_dx(k, before[k]);
        h.cpu.accumulate[k] = modes[k] == DxMode::accumulate;
        if (modes[k] == DxMode::null) h.cpu.dx[k] = nullptr;
      }
      h.backward();
      for (std::size_t k = 0; k < modes.size(); ++k) {
        const std::string what = "dx" + std::to_string(k);
        const math::Dims4 dims = logical_dims(in_shape(c.graph, layer, k), c.n);
        if (modes[k] == DxMode::null) {
          EXPECT_TRUE(std::all_of(h.dx[k].begin(), h.dx[k].end(), [](float e) { return e == 7.0f; }))
              << what << " is null but was written";
          continue;
        }
        const std::vector<double> want = modes[k] == DxMode::accumulate ? plus(before[k], r.dx[k]) : r.dx[k];
        expect_close(want, h.dx_logical(k), tol.atol, tol.rtol, what, dims);
        expect_in_dtype(h.dx_logical(k), v.dtype, what);
        expect_tail_untouched(h.dx[k], count(in_shape(c.graph, layer, k), c.n), what);
      }
      for (std::size_t p = 0; p < h.params.size(); ++p) {
        const std::string what = "gradient of " + h.param(p).name;
        if (h.cpu.grads[p]) {
          expect_close(r.grads[p], h.grads[p], tol.atol, tol.rtol, what);
          if (detail::params_in_dtype(layer)) expect_in_dtype(h.grads[p], v.dtype, what);
        }
        else
          EXPECT_TRUE(std::all_of(h.grads[p].begin(), h.grads[p].end(), [](float e) { return std::isnan(e); }))
              << what << " was written, but the parameter gets none";
      }
    }
  });
}

// Central differences of L = sum(y * dy) at a spread of elements of every input and trainable
// parameter. Where the one-sided differences disagree the element sits at a kink (relu at
// 0, a max's tie) and is skipped; most must be checked.
void check_gradcheck(const OpSpec& spec, const Variant& v) {
  constexpr float kEps = 1e-2f;
  constexpr std::size_t kPoints = 10;
  if (v.dtype != DType::f32) GTEST_SKIP() << "finite differences need fp32's resolution (the fp32 variants run them)";
  for_each_case(spec, v, [&](const OpCase& c, const Layer& layer) {
    if (!c.finite_differences) return;
    const OpData d = random_data(c, c.graph);
    OpHarness h(c.graph, "op", c.n, 1, v.layout, c.capacity);
    h.cpu.conv = v.cpu_conv;
    load(h, d);
    h.cpu.dropout_key = dropout_key(layer);
    h.forward(c.train);
    h.backward();
    int checked = 0, kinks = 0;
    // `value` in memory, its analytic gradient `analytic`.
    auto check = [&](float* value, double analytic, const std::string& what) {
      const double centre = h.objective(c.train);
      const float saved = *value;
      *value = saved + kEps;
      const double up = h.objective(c.train);
      *value = saved - kEps;
      const double down = h.objective(c.train);
      *value = saved;
      const double forward_diff = (up - centre) / kEps, backward_diff = (centre - down) / kEps;
      const double numeric = (up - down) / (2.0 * kEps);
      if (std::fabs(forward_diff - backward_diff) > 0.05 + 0.05 * std::fabs(numeric)) {
        ++kinks;
        return;
      }
      ++checked;
      EXPECT_NEAR(analytic, numeric, 5e-3 + 1e-2 * std::fabs(numeric)) << what;
    };
    for (std::size_t k = 0; k < h.x.size(); ++k) {
      const math::Dims4 mem = h.in_dims(k);
      const std::vector<float> dx = h.dx_logical(k);
      for (std::size_t i = 0; i < kPoints && !dx.empty(); ++i) {
        const std::size_t e = i * dx.size() / kPoints + i % 3;
        if (e >= dx.size()) continue;
        const math::Index4 at4 = math::index_of(logical_dims(in_shape(c.graph, layer, k), c.n), static_cast<std::int64_t>(e));
        check(&h.x[k][static_cast<std::size_t>(mem.at(at4.n, at4.c, at4.h, at4.w))], dx[e],
              "dx" + std::to_string(k) + "[" + std::to_string(e) + "] (logical)");
      }
    }
    for (std::size_t p = 0; p < h.params.size(); ++p) {
      if (!h.cpu.grads[p]) continue;
      const std::vector<float> grad = h.grads[p];
      for (std::size_t i = 0; i < kPoints; ++i) {
        const std::size_t e = i * grad.size() / kPoints;
        if (i > 0 && e == (i - 1) * grad.size() / kPoints) continue;
        check(&h.params[p][e], grad[e], "gradient of " + h.param(p).name + "[" + std::to_string(e) + "]");
      }
    }
    EXPECT_GE(checked, 2 * kinks) << kinks << " elements sat at kinks, " << checked << " were checked";
  });
}

void check_layouts(const OpSpec& spec, const Variant& v) {
  for_each_case(spec, v, [&](const OpCase& c, const Layer& layer) {
    if (auto why = detail::cpu_op(layer.op).supports(layer, v.dtype, Layout::nchw)) {
      ADD_FAILURE() << "the CPU runs " << to_string(v.layout) << " but not nchw: " << *why;
      return;
    }
    const OpData d = rounded(random_data(c, c.graph), layer, v.dtype);
    const std::vector<std::vector<float>> before = rounded(random_dx(c, c.graph), v.dtype);
    for (const std::vector<DxMode>& modes : dx_passes(layer.inputs.size())) {
      SCOPED_TRACE(std::string("dx ") + to_string(modes[0]));
      const Outputs want = run_cpu(c, Layout::nchw, 1, d, modes, before, v.cpu_conv, v.dtype);
      const Outputs got = run_cpu(c, v.layout, 3, d, modes, before, v.cpu_conv, v.dtype);
      // NCHW on 3 threads must give NCHW's bits on 1 with kiln's kernels: the split never
      // changes a sum's order. oneDNN's kernels split their sums by the thread count (their
      // bits repeat only at a fixed count: ConvCpu.DeterministicRunToRun).
      const bool bitwise = v.layout == Layout::nchw && (v.cpu_conv == CpuConv::kiln || !has_onednn());
      expect_outputs(want, got, c, bitwise ? Tolerance{} : dtype_tolerance(v.dtype, spec.layouts),
                     std::string(to_string(v.layout)) + " on 3 threads vs nchw on 1:");
    }
  });
}

}  // namespace kiln::test::ops
