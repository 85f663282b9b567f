// linear's CPU kernels on every GEMM kernel and thread setup against a double-precision
// reference, an empty batch, determinism run to run. Finite differences and the dx/frozen
// contract are in BackendOps (tests/ops/backend_ops_conv_test.cpp).
#include <cblas.h>

#include <cstring>
#include <limits>

#include "layers/gemm.hpp"
#include "op_harness.hpp"

namespace kiln::test {
namespace {

struct LinearCase {
  const char* name;
  Shape input;  // flattened before the layer
  std::int64_t out;
  bool bias = true;
  std::int64_t n = 3;
};

Graph linear_graph(const LinearCase& k, bool frozen = false) {
  GraphBuilder b("t", k.input, 10);
  LayerDef fc = layers::linear(k.out).bias(k.bias).named("fc");
  if (frozen) fc.frozen();
  b.add(layers::flatten()).add(fc).add(layers::linear(10));
  return b.build();
}

struct LinearRef {
  std::vector<double> y, dx, dw, db;
};

LinearRef reference(const OpHarness& h) {
  const std::int64_t n = h.cpu.n, in = h.cpu.in_shape().c, out = h.layer().shape.c;
  const bool bias = h.layer().attrs.bias;
  const std::vector<float>& x = h.x[0];
  const std::vector<float>& w = h.params[0];
  auto at = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  LinearRef r;
  r.y.assign(at(n * out), 0.0);
  r.dx.assign(at(n * in), 0.0);
  r.dw.assign(at(out * in), 0.0);
  r.db.assign(at(out), 0.0);
  for (std::int64_t s = 0; s < n; ++s)
    for (std::int64_t o = 0; o < out; ++o) {
      const double g = h.dy[at(s * out + o)];
      double acc = bias ? h.params[1][at(o)] : 0.0;
      for (std::int64_t i = 0; i < in; ++i) {
        acc += static_cast<double>(x[at(s * in + i)]) * w[at(o * in + i)];
        r.dx[at(s * in + i)] += g * w[at(o * in + i)];
        r.dw[at(o * in + i)] += g * x[at(s * in + i)];
      }
      r.y[at(s * out + o)] = acc;
      r.db[at(o)] += g;
    }
  return r;
}

// Forward sums `in` products of N(0,1) values in fp32 (in <= 300 here), backward `out` or n.
constexpr double kFwdAtol = 1e-4, kFwdRtol = 1e-4;
constexpr double kBwdAtol = 2e-4, kBwdRtol = 1e-4;

void poison(OpHarness& h) {
  constexpr float nan = std::numeric_limits<float>::quiet_NaN();
  std::fill(h.y.begin(), h.y.end(), nan);
  for (auto& g : h.grads) std::fill(g.begin(), g.end(), nan);
  for (auto& d : h.dx) std::fill(d.begin(), d.end(), nan);
}

// How the GEMMs run, for one scope: on which kernel, and with how many OpenBLAS threads.
// The kernels split work among their own threads only where the GEMMs do not use
// OpenBLAS's threads, so every combination needs testing.
struct GemmSetup {
  int threads;  // the kernel's (CpuLayer::threads)
  int blas;     // OpenBLAS's
  detail::GemmKernel kernel;
};

class GemmScope {
 public:
  explicit GemmScope(const GemmSetup& s)
      : saved_threads_(openblas_get_num_threads()), saved_kernel_(detail::gemm_kernel()) {
    openblas_set_num_threads(s.blas);
    supported_ = detail::set_gemm_kernel(s.kernel);
  }
  ~GemmScope() {
    openblas_set_num_threads(saved_threads_);
    detail::set_gemm_kernel(saved_kernel_);
  }
  GemmScope(const GemmScope&) = delete;
  GemmScope& operator=(const GemmScope&) = delete;
  // False when this CPU lacks the kernel (the setup is then skipped).
  bool supported() const { return supported_; }

 private:
  int saved_threads_;
  detail::GemmKernel saved_kernel_;
  bool supported_ = false;
};

constexpr detail::GemmKernel kAvx512 = detail::GemmKernel::avx512, kAvx2 = detail::GemmKernel::avx2,
                             kBlas = detail::GemmKernel::openblas;

// Serial; teams of 2 and 3 (uneven splits, batches smaller than the team); OpenBLAS's own
// threads; on every kernel.
constexpr GemmSetup kSetups[] = {{1, 1, kAvx512}, {2, 1, kAvx512}, {3, 1, kAvx512}, {2, 2, kAvx512},
                                 {1, 1, kAvx2},   {3, 1, kAvx2},   {2, 2, kAvx2},   {1, 1, kBlas},
                                 {2, 1, kBlas},   {3, 1, kBlas},   {2, 2, kBlas}};

const char* name(detail::GemmKernel k) { return k == kAvx512 ? "AVX-512" : k == kAvx2 ? "AVX2" : "OpenBLAS"; }

class LinearSweep : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearSweep, MatchesReference) {
  const LinearCase& k = GetParam();
  for (const GemmSetup& setup : kSetups) {
    SCOPED_TRACE(::testing::Message() << "threads " << setup.threads << ", OpenBLAS threads " << setup.blas << ", "
                                      << name(setup.kernel) << " GEMM");
    GemmScope scope(setup);
    if (!scope.supported()) continue;
    OpHarness h(linear_graph(k), "fc", k.n);
    h.cpu.threads = setup.threads;
    poison(h);
    h.forward();
    h.backward();
    LinearRef r = reference(h);
    expect_close(r.y, h.y.data(), kFwdAtol, kFwdRtol, "y");
    expect_close(r.dx, h.dx[0].data(), kBwdAtol, kBwdRtol, "dx");
    expect_close(r.dw, h.grads[0].data(), kBwdAtol, kBwdRtol, "dW");
    if (k.bias) expect_close(r.db, h.grads[1].data(), kBwdAtol, kBwdRtol, "db");
  }
}

const LinearCase kCases[] = {
    {"n1", Shape::chw(7, 1, 1), 5, true, 1},
    {"from_image", Shape::chw(4, 3, 5), 10, true, 6},
    {"no_bias", Shape::chw(33, 1, 1), 9, false, 4},
    {"wide", Shape::chw(16, 4, 4), 64, true, 17},
};

INSTANTIATE_TEST_SUITE_P(Cpu, LinearSweep, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<LinearCase>& info) { return std::string(info.param.name); });

const LinearCase kContract{"contract", Shape::chw(6, 2, 2), 5, true, 4};

// No samples: nothing to read or write but the gradients, which are zero.
TEST(LinearCpu, EmptyBatchGivesZeroGradients) {
  OpHarness h(linear_graph(kContract), "fc", 0);
  poison(h);
  h.forward();
  h.backward();
  for (const auto& g : h.grads)
    for (float v : g) ASSERT_EQ(v, 0.0f);
}

TEST(LinearCpu, DeterministicRunToRun) {
  const LinearCase k{"big", Shape::chw(64, 4, 4), 64, true, 128};
  for (const GemmSetup& setup : kSetups) {
    SCOPED_TRACE(::testing::Message() << "threads " << setup.threads << ", OpenBLAS threads " << setup.blas << ", "
                                      << name(setup.kernel) << " GEMM");
    GemmScope scope(setup);
    if (!scope.supported()) continue;
    std::vector<std::vector<float>> first;
    for (int run = 0; run < 2; ++run) {
      OpHarness h(linear_graph(k), "fc", k.n, /*seed=*/7);
      h.cpu.threads = setup.threads;
      poison(h);
      h.forward();
      h.backward();
      std::vector<std::vector<float>> out{h.y, h.dx[0], h.grads[0], h.grads[1]};
      if (run == 0) first = out;
      for (std::size_t i = 0; run == 1 && i < out.size(); ++i)
        EXPECT_EQ(std::memcmp(out[i].data(), first[i].data(), out[i].size() * sizeof(float)), 0) << "tensor " << i;
    }
  }
}

}  // namespace
}  // namespace kiln::test
