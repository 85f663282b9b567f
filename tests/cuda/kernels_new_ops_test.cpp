// kiln's groupnorm, mul and upsample CUDA kernels (cuda/kernels/groupnorm.cu, mul.cu,
// upsample.cu) against the CPU layers, NCHW and NHWC. Tolerances, |gpu - cpu| <= atol +
// rtol*|cpu|: groupnorm 1e-4/1e-4 (double sums in another order); mul forward and its
// element-wise gradients exact (one float multiply, and the add of accumulate), the
// per-channel gradient 1e-5/1e-5 (a double sum in another order); upsample forward exact,
// backward 1e-6/1e-6 (float sums of the same terms in the same order).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels_test_util.hpp"

namespace kiln::test {
namespace {

using cuda::Dims4;

Graph graph_with(const std::vector<LayerDef>& defs, Shape input) {
  GraphBuilder b("t", input, 10);
  for (const LayerDef& d : defs) b.add(d);
  b.add(layers::flatten()).add(layers::linear(10));
  return b.build();
}

// ---- groupnorm ----------------------------------------------------------------------------

void check_groupnorm(OpHarness& h, bool nhwc) {
  SCOPED_TRACE(std::string(layout_name(nhwc)) + ", " + h.layer().shape.str() + ", groups " +
               std::to_string(h.layer().attrs.groups) + ", n " + std::to_string(h.cpu.n));
  const std::int64_t n = h.cpu.n;
  const Shape& s = h.layer().shape;
  const Dims4 d = dims_of(s, n, nhwc && s.is_image());
  const auto c = static_cast<std::size_t>(s.c);
  const std::int64_t groups = h.layer().attrs.groups;
  const float eps = static_cast<float>(h.layer().attrs.eps);

  DeviceBuffer<float> weight(h.params[0]), bias(h.params[1]);
  DeviceBuffer<float> x(to_layout(h.x[0], d)), y(std::vector<float>(h.y.size(), kNaN));
  h.forward();
  cuda::groupnorm_forward(DType::f32, x.get(), d, groups, weight.get(), bias.get(), y.get(), eps, nullptr);
  expect_near(h.y, from_layout(y.download(), d), 1e-4, 1e-4, "y", &d);

  DeviceBuffer<float> dy(to_layout(h.dy, d)), dweight(std::vector<float>(c, kNaN)), dbias(std::vector<float>(c, kNaN));
  auto run = [&](float* dx, bool accumulate) {
    cuda::groupnorm_backward(DType::f32, x.get(), dy.get(), d, groups, weight.get(), dx, accumulate, dweight.get(), dbias.get(), eps,
                             nullptr);
  };
  check_dx(h, d, 1e-4, 1e-4, run);  // ends with dx null: the parameter gradients must still come
  expect_near(h.grads[0], dweight.download(), 1e-4, 1e-4, "dweight");
  expect_near(h.grads[1], dbias.download(), 1e-4, 1e-4, "dbias");
  // Only dx wanted (frozen parameters).
  DeviceBuffer<float> dx(std::vector<float>(h.dx[0].size(), kNaN));
  cuda::groupnorm_backward(DType::f32, x.get(), dy.get(), d, groups, weight.get(), dx.get(), false, nullptr, nullptr, eps, nullptr);
  h.bind();
  h.backward();
  expect_near(h.dx[0], from_layout(dx.download(), d), 1e-4, 1e-4, "dx (no parameter gradients)", &d);
}

TEST(CudaGroupnorm, MatchesCpu) {
  KILN_REQUIRE_GPU();
  for (std::int64_t groups : {1, 4, 8})
    for (bool nhwc : {false, true}) {
      OpHarness h(graph_with({layers::groupnorm(groups).named("gn")}, Shape::chw(8, 5, 6)), "gn", 3);
      for (float& v : h.x[0]) v = 3.0f * v + 2.0f;  // a mean far from 0 tests the two-pass variance
      for (auto& p : h.params)
        for (float& v : p) v = 0.5f + 0.25f * v;
      h.bind();
      check_groupnorm(h, nhwc);
    }
}

// 2 channels x 17 x 17 = 578 values per group > 256 threads; 70,000 (sample, group) pairs
// are more than the 65,535 blocks launched, so blocks loop.
TEST(CudaGroupnorm, LargeGroupsAndManyGroups) {
  KILN_REQUIRE_GPU();
  OpHarness big(graph_with({layers::groupnorm(2).named("gn")}, Shape::chw(4, 17, 17)), "gn", 2);
  check_groupnorm(big, true);
  OpHarness many(graph_with({layers::flatten(), layers::groupnorm(35000).named("gn")}, Shape::chw(70000, 1, 1)), "gn", 2);
  check_groupnorm(many, false);
}

// ---- mul ----------------------------------------------------------------------------------

// The CPU's gradient of input `i` (the other's dx null) over NaN and accumulated into `before`.
std::vector<float> cpu_grad(OpHarness& h, std::size_t i, const std::vector<float>* before) {
  h.bind();
  for (std::size_t k = 0; k < h.dx.size(); ++k)
    if (k != i) h.cpu.dx[k] = nullptr;
  if (before) h.dx[i] = *before, h.cpu.dx[i] = h.dx[i].data(), h.cpu.accumulate[i] = true;
  else std::fill(h.dx[i].begin(), h.dx[i].end(), kNaN);
  h.backward();
  std::vector<float> out = h.dx[i];
  h.bind();
  return out;
}

void check_mul(OpHarness& h, bool nhwc) {
  const std::int64_t n = h.cpu.n;
  const Shape& s = h.layer().shape;
  const bool per_channel = h.cpu.in_shape(1) != h.cpu.in_shape(0);
  SCOPED_TRACE(std::string(layout_name(nhwc)) + ", " + s.str() + " by " + h.cpu.in_shape(1).str());
  const Dims4 d = dims_of(s, n, nhwc), db_dims = dims_of(h.cpu.in_shape(1), n, nhwc && !per_channel);
  DeviceBuffer<float> a(to_layout(h.x[0], d)), b(to_layout(h.x[1], db_dims)), y(std::vector<float>(h.y.size(), kNaN));
  h.forward();
  cuda::mul_forward(DType::f32, a.get(), b.get(), per_channel, d, y.get(), nullptr);
  expect_near(h.y, from_layout(y.download(), d), 0, 0, "y", &d);

  DeviceBuffer<float> dy(to_layout(h.dy, d));
  const double tol = per_channel ? 1e-5 : 0;
  for (bool accumulate : {false, true}) {
    const std::vector<float> before_a = h.random(static_cast<std::int64_t>(h.dx[0].size()));
    const std::vector<float> before_b = h.random(static_cast<std::int64_t>(h.dx[1].size()));
    const std::vector<float> want_a = cpu_grad(h, 0, accumulate ? &before_a : nullptr);
    const std::vector<float> want_b = cpu_grad(h, 1, accumulate ? &before_b : nullptr);
    DeviceBuffer<float> da(accumulate ? to_layout(before_a, d) : std::vector<float>(want_a.size(), kNaN));
    DeviceBuffer<float> db(accumulate ? to_layout(before_b, db_dims) : std::vector<float>(want_b.size(), kNaN));
    cuda::mul_backward(DType::f32, a.get(), b.get(), per_channel, dy.get(), d, da.get(), accumulate, nullptr, false, nullptr);
    cuda::mul_backward(DType::f32, a.get(), b.get(), per_channel, dy.get(), d, nullptr, false, db.get(), accumulate, nullptr);
    const std::string how = accumulate ? " (accumulated)" : "";
    expect_near(want_a, from_layout(da.download(), d), 0, 0, "da" + how, &d);
    expect_near(want_b, from_layout(db.download(), db_dims), tol, tol, "db" + how, &db_dims);
  }
  cuda::mul_backward(DType::f32, a.get(), b.get(), per_channel, dy.get(), d, nullptr, false, nullptr, false, nullptr);
  sync();
}

TEST(CudaMul, SameShapeAndPerChannelGates) {
  KILN_REQUIRE_GPU();
  const Shape in = Shape::chw(6, 5, 7);
  for (bool nhwc : {false, true}) {
    OpHarness same(graph_with({layers::relu().named("r"), layers::mul({"input", "r"}).named("m")}, in), "m", 3);
    check_mul(same, nhwc);
    OpHarness c11(graph_with({layers::global_avgpool().named("p"), layers::mul({"input", "p"}).named("m")}, in), "m", 3);
    check_mul(c11, nhwc);
    OpHarness vec(graph_with({layers::global_avgpool().named("p"), layers::flatten().named("v"),
                              layers::mul({"input", "v"}).named("m")},
                             in),
                  "m", 3);
    check_mul(vec, nhwc);
  }
}

// ---- upsample -----------------------------------------------------------------------------

TEST(CudaUpsample, MatchesCpu) {
  KILN_REQUIRE_GPU();
  for (Hw scale : {Hw{2, 2}, Hw{1, 3}, Hw{3, 2}})
    for (bool nhwc : {false, true}) {
      OpHarness h(graph_with({layers::upsample(scale).named("up")}, Shape::chw(5, 4, 3)), "up", 2);
      SCOPED_TRACE(std::string(layout_name(nhwc)) + ", scale " + std::to_string(scale.h) + "x" + std::to_string(scale.w));
      const Dims4 in = dims_of(h.cpu.in_shape(), 2, nhwc), out = dims_of(h.layer().shape, 2, nhwc);
      DeviceBuffer<float> x(to_layout(h.x[0], in)), y(std::vector<float>(h.y.size(), kNaN)), dy(to_layout(h.dy, out));
      h.forward();
      cuda::upsample_forward(DType::f32, x.get(), in, y.get(), out, scale.h, scale.w, nullptr);
      expect_near(h.y, from_layout(y.download(), out), 0, 0, "y", &out);
      check_dx(h, in, 1e-6, 1e-6, [&](float* dx, bool accumulate) {
        if (dx) cuda::upsample_backward(DType::f32, dy.get(), out, dx, in, accumulate, scale.h, scale.w, nullptr);
      });
    }
}

}  // namespace
}  // namespace kiln::test
