// kiln's element-wise and join CUDA kernels (cuda/kernels/elementwise.cu, concat.cu) against
// the CPU layers run by OpHarness on the same data. Tolerances, |gpu - cpu| <= atol + rtol*|cpu|:
// activations 1e-5/1e-5 (device expf/erff/tanhf differ from glibc by a few ulp); copies,
// concat, flatten, add and the dropout mask exact; scale and dropout values 1e-6/1e-6 (a
// fused multiply-add may round once instead of twice).
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels_test_util.hpp"
#include "math/dropout.hpp"
#include "math/rng.hpp"

namespace kiln::test {
namespace {

using cuda::Dims4;

Graph one_op_graph(LayerDef op, Shape input = Shape::chw(3, 5, 6)) {
  GraphBuilder b("t", input, 10);
  b.add(op.named("op")).add(layers::flatten()).add(layers::linear(10));
  return b.build();
}

// ---- activations ------------------------------------------------------------------------

TEST(CudaKernels, Activations) {
  KILN_REQUIRE_GPU();
  const LayerDef defs[] = {layers::relu(), layers::leaky_relu(0.2), layers::gelu(), layers::silu(), layers::sigmoid(),
                           layers::tanh()};
  for (const LayerDef& def : defs) {
    SCOPED_TRACE(std::string(op_name(def.op)));
    const std::int64_t n = 4;
    OpHarness h(one_op_graph(def), "op", n);
    for (float& v : h.x[0]) v *= 3.0f;  // reach the saturated parts of sigmoid and tanh
    h.x[0][0] = 0.0f, h.x[0][1] = -0.0f, h.x[0][2] = 20.0f, h.x[0][3] = -20.0f;
    h.bind();
    const std::int64_t count = static_cast<std::int64_t>(h.x[0].size());
    const OpKind op = h.layer().op;
    const float slope = static_cast<float>(h.layer().attrs.slope);
    const Dims4 d = dims_of(h.layer().shape, n, false);

    h.forward();
    DeviceBuffer<float> x(h.x[0]), y(std::vector<float>(h.y.size(), kNaN));
    cuda::activation_forward(DType::f32, op, slope, x.get(), y.get(), count, nullptr);
    expect_near(h.y, y.download(), 1e-5, 1e-5, "y", &d);

    // Backward reads what the plan keeps for it: y (the CPU's) or x.
    const bool keeps_output = detail::op_def(op).backward_needs(h.layer()).output;
    DeviceBuffer<float> saved(keeps_output ? h.y : h.x[0]), dy(h.dy);
    check_dx(h, d, 1e-5, 1e-5, [&](float* dx, bool accumulate) {
      cuda::activation_backward(DType::f32, op, slope, saved.get(), dy.get(), dx, accumulate, count, nullptr);
    });

    // In place, as the executor may run it.
    cuda::activation_forward(DType::f32, op, slope, x.get(), x.get(), count, nullptr);
    expect_near(h.y, x.download(), 1e-5, 1e-5, "y in place", &d);
  }
}

TEST(CudaKernels, ActivationRejectsOtherOps) {
  KILN_REQUIRE_GPU();
  DeviceBuffer<float> x(std::vector<float>{1.0f});
  EXPECT_THROW(cuda::activation_forward(DType::f32, OpKind::conv, 0.0f, x.get(), x.get(), 1, nullptr), std::invalid_argument);
}

// ---- scale, dropout -----------------------------------------------------------------------

TEST(CudaKernels, Scale) {
  KILN_REQUIRE_GPU();
  const std::int64_t n = 3;
  OpHarness h(one_op_graph(layers::scale(1.0 / 9.0)), "op", n);
  const float factor = static_cast<float>(h.layer().attrs.factor);
  const std::int64_t count = static_cast<std::int64_t>(h.x[0].size());
  const Dims4 d = dims_of(h.layer().shape, n, false);
  h.forward();
  DeviceBuffer<float> x(h.x[0]), y(count), dy(h.dy);
  cuda::scale_forward(DType::f32, factor, x.get(), y.get(), count, nullptr);
  expect_near(h.y, y.download(), 0.0, 0.0, "y", &d);
  check_dx(h, d, 1e-6, 1e-6, [&](float* dx, bool accumulate) {
    cuda::scale_backward(DType::f32, factor, dy.get(), dx, accumulate, count, nullptr);
  });
}

TEST(CudaKernels, DropoutMaskIsTheCpus) {
  KILN_REQUIRE_GPU();
  for (double p : {0.3, 0.5, 0.0}) {
    SCOPED_TRACE("p = " + std::to_string(p));
    const std::int64_t n = 4;
    OpHarness h(one_op_graph(layers::dropout(p), Shape::chw(4, 8, 8)), "op", n);
    const std::uint64_t key = math::stream_key(42, math::kStreamDropout, 3);
    h.cpu.dropout_key = key;
    const float pf = static_cast<float>(h.layer().attrs.p);
    const std::int64_t count = static_cast<std::int64_t>(h.x[0].size());
    const Dims4 d = dims_of(h.layer().shape, n, false);
    for (float& v : h.x[0])
      if (v == 0.0f) v = 1.0f;  // a zero input would hide the mask
    h.bind();
    h.forward(true);
    DeviceBuffer<float> x(h.x[0]), y(count), dy(h.dy);
    cuda::dropout_forward(DType::f32, pf, key, x.get(), y.get(), d, nullptr);
    const std::vector<float> got = y.download();
    std::int64_t dropped = 0, mask_differs = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      dropped += got[i] == 0.0f;
      if ((got[i] == 0.0f) != (h.y[i] == 0.0f)) {
        if (mask_differs == 0) ADD_FAILURE() << "mask differs first at element " << i << ": gpu " << got[i] << ", cpu " << h.y[i];
        ++mask_differs;
      }
    }
    EXPECT_EQ(mask_differs, 0);
    expect_near(h.y, got, 1e-6, 1e-6, "y", &d);
    // The rate: 1024 elements, p within 5 standard deviations (0.016).
    EXPECT_NEAR(static_cast<double>(dropped) / static_cast<double>(count), p, 0.08);
    check_dx(h, d, 1e-6, 1e-6, [&](float* dx, bool accumulate) {
      cuda::dropout_backward(DType::f32, pf, key, dy.get(), dx, accumulate, d, nullptr);
    });
  }
}

// ---- copy, add, fill ----------------------------------------------------------------------

TEST(CudaKernels, CopyOrAddAndFill) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<float> a(1001), b(1001);
  for (float& v : a) v = normal(rng);
  for (float& v : b) v = normal(rng);
  const auto count = static_cast<std::int64_t>(a.size());
  DeviceBuffer<float> src(a), dst(b);
  cuda::copy_or_add(DType::f32, src.get(), dst.get(), true, count, nullptr);
  std::vector<float> sum(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) sum[i] = b[i] + a[i];
  expect_near(sum, dst.download(), 0.0, 0.0, "dst += src");
  cuda::copy_or_add(DType::f32, src.get(), dst.get(), false, count, nullptr);
  expect_near(a, dst.download(), 0.0, 0.0, "dst = src");
  cuda::copy_or_add(DType::f32, dst.get(), dst.get(), false, count, nullptr);  // a no-op
  cuda::copy_or_add(DType::f32, src.get(), nullptr, false, count, nullptr);    // no gradient wanted
  expect_near(a, dst.download(), 0.0, 0.0, "dst after no-ops");

  cuda::fill(dst.get(), 2.5f, count, nullptr);
  expect_near(std::vector<float>(a.size(), 2.5f), dst.download(), 0.0, 0.0, "fill");
}

// add of three inputs, as the executor runs it: y = x0 + x1 + x2 in one pass; each input's
// gradient is dy, copied or added.
TEST(CudaKernels, AddOfThreeInputs) {
  KILN_REQUIRE_GPU();
  GraphBuilder b("t", Shape::chw(3, 6, 5), 10);
  for (const char* name : {"c0", "c1", "c2"}) b.add(layers::conv(4, 3).pad(1).named(name).from({"input"}));
  b.add(layers::add({"c0", "c1", "c2"}).named("j")).add(layers::flatten()).add(layers::linear(10));
  const std::int64_t n = 2;
  OpHarness h(b.build(), "j", n);
  const auto count = static_cast<std::int64_t>(h.y.size());
  h.forward();
  DeviceBuffer<float> x0(h.x[0]), x1(h.x[1]), x2(h.x[2]), y(count), dy(h.dy);
  // The CPU's order in one pass (bit for bit in fp32).
  cuda::add_n(DType::f32, std::vector<void*>{x0.get(), x1.get(), x2.get()}, y.get(), count, nullptr);
  expect_near(h.y, y.download(), 0.0, 0.0, "y");

  std::fill(h.dx[0].begin(), h.dx[0].end(), kNaN);
  std::vector<float> before = h.random(count);
  h.dx[1] = before;
  h.bind();
  h.cpu.accumulate[1] = true;
  h.cpu.dx[2] = nullptr;
  h.backward();
  DeviceBuffer<float> dx0(std::vector<float>(h.dx[0].size(), kNaN)), dx1(before);
  cuda::copy_or_add(DType::f32, dy.get(), dx0.get(), false, count, nullptr);
  cuda::copy_or_add(DType::f32, dy.get(), dx1.get(), true, count, nullptr);
  cuda::copy_or_add(DType::f32, dy.get(), nullptr, false, count, nullptr);
  expect_near(h.dx[0], dx0.download(), 0.0, 0.0, "dx0");
  expect_near(h.dx[1], dx1.download(), 0.0, 0.0, "dx1 accumulated");
}

// 17M elements: more than one pass of the grid-stride loops (65535 blocks of 256 threads).
TEST(CudaKernels, GridStrideCoversLargeCounts) {
  KILN_REQUIRE_GPU();
  const std::int64_t count = 65535LL * 256 + 1000003;
  DeviceBuffer<float> a(static_cast<std::size_t>(count)), b(static_cast<std::size_t>(count));
  cuda::fill(a.get(), -1.5f, count, nullptr);
  cuda::activation_forward(DType::f32, OpKind::relu, 0.0f, a.get(), b.get(), count, nullptr);
  cuda::add_n(DType::f32, std::vector<void*>{a.get(), b.get()}, b.get(), count, nullptr);  // -1.5 + relu(-1.5) = -1.5
  const std::vector<float> got = b.download();
  const auto wrong = std::count_if(got.begin(), got.end(), [](float v) { return v != -1.5f; });
  EXPECT_EQ(wrong, 0) << "first wrong element: " << (std::find_if(got.begin(), got.end(), [](float v) { return v != -1.5f; }) - got.begin());
}

// More inputs than one add_n pass takes: chunks of kAddInputs, the partial sum leading the
// next chunk; in fp32 that is the CPU's left-to-right sum exactly. In bf16 the partial sum is
// stored once per chunk, so 8 inputs or fewer round once, as the CPU oracle.
TEST(CudaKernels, AddOfManyInputsSumsInOrder) {
  KILN_REQUIRE_GPU();
  const std::size_t inputs = 2 * cuda::kAddInputs + 3, count = 1000;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 10.0f);
  std::vector<std::vector<float>> host(inputs, std::vector<float>(count));
  std::vector<std::unique_ptr<DeviceBuffer<float>>> device;
  std::vector<void*> x;
  for (auto& v : host) {
    for (float& e : v) e = normal(rng);
    device.push_back(std::make_unique<DeviceBuffer<float>>(v));
    x.push_back(device.back()->get());
  }
  std::vector<float> want(count);
  for (std::size_t i = 0; i < count; ++i) {
    float sum = host[0][i];
    for (std::size_t k = 1; k < inputs; ++k) sum += host[k][i];
    want[i] = sum;
  }
  DeviceBuffer<float> y(count);
  cuda::add_n(DType::f32, x, y.get(), static_cast<std::int64_t>(count), nullptr);
  expect_near(want, y.download(), 0.0, 0.0, "y");
}

// Every launcher returns without launching (a zero-block launch is an error) for count 0.
TEST(CudaKernels, ZeroSizeLaunchesAreSkipped) {
  KILN_REQUIRE_GPU();
  const Dims4 empty{0, 3, 4, 4, false};
  const Dims4 one{1, 3, 4, 4, false};
  cuda::activation_forward(DType::f32, OpKind::relu, 0.0f, nullptr, nullptr, 0, nullptr);
  cuda::activation_backward(DType::f32, OpKind::gelu, 0.0f, nullptr, nullptr, nullptr, true, 0, nullptr);
  cuda::scale_forward(DType::f32, 2.0f, nullptr, nullptr, 0, nullptr);
  cuda::scale_backward(DType::f32, 2.0f, nullptr, nullptr, false, 0, nullptr);
  cuda::dropout_forward(DType::f32, 0.5f, 1, nullptr, nullptr, Dims4{0, 3, 4, 4, false}, nullptr);
  cuda::dropout_backward(DType::f32, 0.5f, 1, nullptr, nullptr, false, Dims4{0, 3, 4, 4, false}, nullptr);
  cuda::copy_or_add(DType::f32, nullptr, nullptr, true, 0, nullptr);
  cuda::add_n(DType::f32, std::vector<void*>{nullptr, nullptr}, nullptr, 0, nullptr);
  cuda::fill(nullptr, 1.0f, 0, nullptr);
  cuda::concat_forward_part(DType::f32, nullptr, empty, nullptr, one, 0, nullptr);
  cuda::concat_backward_part(DType::f32, nullptr, one, nullptr, empty, 0, false, nullptr);
  cuda::nhwc_to_nchw(DType::f32, nullptr, empty, nullptr, nullptr);
  cuda::nchw_to_nhwc_grad(DType::f32, nullptr, empty, nullptr, false, nullptr);
  const cuda::PoolGeometry g{2, 2, 2, 2, 0, 0};
  cuda::pool_forward(DType::f32, true, nullptr, empty, nullptr, Dims4{0, 3, 2, 2, false}, g, nullptr);
  cuda::pool_backward(DType::f32, false, nullptr, empty, nullptr, Dims4{0, 3, 2, 2, false}, nullptr, false, g, nullptr);
  cuda::global_pool_forward(DType::f32, true, nullptr, empty, nullptr, nullptr);
  cuda::global_pool_backward(DType::f32, true, nullptr, empty, nullptr, nullptr, false, nullptr);
  cuda::bias_forward(DType::f32, nullptr, nullptr, empty, nullptr);
  cuda::sgd_update(nullptr, nullptr, nullptr, 0, math::SgdHyper{}, nullptr, nullptr);
  cuda::softmax_cross_entropy(DType::f32, nullptr, nullptr, 0, 10, 0.0f, 1.0f, nullptr, nullptr, nullptr, nullptr, nullptr);
  cuda::stage_batch(DType::f32, nullptr, nullptr, nullptr, math::PadMode::zero, nullptr, nullptr, nullptr, empty, nullptr);
  cuda::gather_labels(nullptr, nullptr, 0, nullptr, nullptr);
  cuda::batchnorm_forward(DType::f32, true, nullptr, Dims4{2, 0, 4, 4, false}, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                          nullptr, 0.1f, 1e-5f, nullptr);
  EXPECT_NO_THROW(sync());
}

// ---- concat and the NHWC flatten ----------------------------------------------------------

// Concat of three parts of 2, 3 and 1 channels (images) or 4, 2 and 5 features (vectors),
// written part by part into a NaN-filled whole; backward with part 0 overwriting, part 1
// accumulating, part 2 without a gradient.
void check_concat(bool image, bool nhwc) {
  SCOPED_TRACE(std::string(image ? "image " : "vector ") + layout_name(nhwc));
  const std::vector<std::int64_t> sizes = image ? std::vector<std::int64_t>{2, 3, 1} : std::vector<std::int64_t>{4, 2, 5};
  GraphBuilder b("t", Shape::chw(3, 6, 5), 10);
  std::vector<std::string> names;
  if (!image) b.add(layers::flatten().named("f"));
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    names.push_back("p" + std::to_string(k));
    b.add((image ? layers::conv(sizes[k], 3).pad(1) : layers::linear(sizes[k])).named(names.back()).from({image ? "input" : "f"}));
  }
  b.add(layers::concat(names).named("j"));
  if (image) b.add(layers::flatten());
  b.add(layers::linear(10));
  const std::int64_t n = 3;
  OpHarness h(b.build(), "j", n);
  const Dims4 whole = dims_of(h.layer().shape, n, nhwc);
  h.forward();

  DeviceBuffer<float> y(std::vector<float>(h.y.size(), kNaN)), dy(to_layout(h.dy, whole));
  std::vector<std::unique_ptr<DeviceBuffer<float>>> parts;
  std::int64_t offset = 0;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    const Dims4 part = dims_of(h.cpu.in_shape(k), n, nhwc);
    parts.push_back(std::make_unique<DeviceBuffer<float>>(to_layout(h.x[k], part)));
    cuda::concat_forward_part(DType::f32, parts.back()->get(), part, y.get(), whole, offset, nullptr);
    offset += part.c;
  }
  expect_near(h.y, from_layout(y.download(), whole), 0.0, 0.0, "y", &whole);

  std::fill(h.dx[0].begin(), h.dx[0].end(), kNaN);
  const std::vector<float> before = h.random(static_cast<std::int64_t>(h.dx[1].size()));
  h.dx[1] = before;
  h.bind();
  h.cpu.accumulate[1] = true;
  h.cpu.dx[2] = nullptr;
  h.backward();
  offset = 0;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    const Dims4 part = dims_of(h.cpu.in_shape(k), n, nhwc);
    DeviceBuffer<float> dx(k == 1 ? to_layout(before, part) : std::vector<float>(h.dx[k].size(), kNaN));
    cuda::concat_backward_part(DType::f32, dy.get(), whole, k == 2 ? nullptr : dx.get(), part, offset, k == 1, nullptr);
    if (k < 2) expect_near(h.dx[k], from_layout(dx.download(), part), 0.0, 0.0, "dx" + std::to_string(k), &part);
    offset += part.c;
  }
  sync();
}

TEST(CudaKernels, Concat) {
  KILN_REQUIRE_GPU();
  for (bool image : {true, false})
    for (bool nhwc : {false, true}) check_concat(image, nhwc);
}

// A 1x2x1x2 NHWC tensor stored [c0w0, c1w0, c0w1, c1w1] flattens channel-major, as PyTorch.
TEST(CudaKernels, FlattenNhwcByHand) {
  KILN_REQUIRE_GPU();
  const Dims4 d{1, 2, 1, 2, true};
  DeviceBuffer<float> x(std::vector<float>{1, 2, 3, 4}), y(4);
  cuda::nhwc_to_nchw(DType::f32, x.get(), d, y.get(), nullptr);
  EXPECT_EQ(y.download(), (std::vector<float>{1, 3, 2, 4}));
  DeviceBuffer<float> dx(4);
  cuda::nchw_to_nhwc_grad(DType::f32, y.get(), d, dx.get(), false, nullptr);
  EXPECT_EQ(dx.download(), (std::vector<float>{1, 2, 3, 4}));
}

// The flatten layer's CPU result (already channel-major) from an NHWC input, and its
// gradient back into NHWC.
TEST(CudaKernels, FlattenNhwcMatchesCpu) {
  KILN_REQUIRE_GPU();
  const std::int64_t n = 3;
  GraphBuilder b("t", Shape::chw(3, 6, 5), 10);
  b.add(layers::conv(4, 3).named("c")).add(layers::flatten().named("f")).add(layers::linear(10));
  OpHarness h(b.build(), "f", n);
  const Dims4 in = dims_of(h.cpu.in_shape(), n, true);
  h.forward();
  DeviceBuffer<float> x(to_layout(h.x[0], in)), y(std::vector<float>(h.y.size(), kNaN)), dy(h.dy);
  cuda::nhwc_to_nchw(DType::f32, x.get(), in, y.get(), nullptr);
  expect_near(h.y, y.download(), 0.0, 0.0, "y");
  check_dx(h, in, 0.0, 0.0, [&](float* dx, bool accumulate) {
    cuda::nchw_to_nhwc_grad(DType::f32, dy.get(), in, dx, accumulate, nullptr);
  });
}

}  // namespace
}  // namespace kiln::test
