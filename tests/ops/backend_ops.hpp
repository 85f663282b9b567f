#pragma once

// BackendOps, in the manner of ggml's test-backend-ops: every op x layout x dtype, each op
// a table entry (OpSpec: its cases and its double-precision reference), run through the
// same passes:
//   Forward    the CPU's y (and running statistics) against the reference;
//   Backward   the CPU's dx and parameter gradients against the reference, with dx
//              overwritten (over NaN), accumulated, mixed per input, and not written (null);
//              gradients overwritten; frozen and fixed parameters left alone; the input or
//              output the op does not keep for backward (BackwardNeeds) poisoned;
//   GradCheck  the CPU's backward against central finite differences of its forward;
//   Layouts    the CPU in this layout on 3 threads against the CPU in NCHW on 1 thread
//              (nchw: bit for bit; nhwc: the NCHW result permuted, to the op's tolerance);
//   Cuda       each CUDA op entry (cuda_op(kind): prepare, bind, forward, backward) against
//              the CPU in NCHW; in kiln_gpu_tests, skipped without a device.
// In bf16 and fp16 the CPU emulates the dtype: inputs, dY and the weights of convs and
// linears are rounded to it, every output and gradient must be a value of the dtype (a
// rounding left out shows), and close to the double-precision reference of the rounded
// inputs within the dtype's tolerance (kHalfTolerance; an op's own may be wider). GradCheck
// runs in fp32 only: finite differences need its resolution.
// Test names: BackendOps/<Op>.<Pass>/<dtype>_<layout>; the cases loop inside, each under a
// SCOPED_TRACE naming it. A layout or dtype the CPU op's `supports` refuses is skipped with
// its reason. All tensors handed to and from a reference are logical NCHW.
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "op_harness.hpp"

namespace kiln::test::ops {

struct Variant {
  DType dtype = DType::f32;
  Layout layout = Layout::nchw;
  // conv: whose kernels. automatic mixes kiln's and oneDNN's by shape; the conv tests also
  // run each alone (kConvVariants).
  CpuConv cpu_conv = CpuConv::automatic;
};

// fp16 and bf16: the CPU emulates them in fp32 (backend/cpu_ops.hpp), the oracle of the GPU's
// half-precision kernels.
inline const Variant kVariants[] = {{DType::f32, Layout::nchw},  {DType::f32, Layout::nhwc},  {DType::bf16, Layout::nchw},
                                    {DType::bf16, Layout::nhwc}, {DType::f16, Layout::nchw}, {DType::f16, Layout::nhwc}};
inline const Variant kConvVariants[] = {{DType::f32, Layout::nchw, CpuConv::kiln},
                                        {DType::f32, Layout::nhwc, CpuConv::kiln},
                                        {DType::f32, Layout::nchw, CpuConv::onednn},
                                        {DType::f32, Layout::nhwc, CpuConv::onednn}};

// gtest's description of a parameter ("fp32 nchw auto" rather than its bytes).
inline void PrintTo(const Variant& v, std::ostream* os) {
  *os << to_string(v.dtype) << ' ' << to_string(v.layout) << ' ' << to_string(v.cpu_conv);
}

inline std::string variant_name(const ::testing::TestParamInfo<Variant>& info) {
  // DType's spelling is "fp32"; test names use the short "f32".
  const std::string dtype = info.param.dtype == DType::f32 ? "f32" : std::string(to_string(info.param.dtype));
  std::string name = dtype;
  name += '_';
  name += to_string(info.param.layout);
  if (info.param.cpu_conv != CpuConv::automatic) (name += '_') += to_string(info.param.cpu_conv);
  return name;
}

// One sample batch, logical NCHW (vectors: [n, features]).
struct OpData {
  std::vector<std::vector<float>> x;  // per input
  std::vector<std::vector<float>> params;
  std::vector<float> dy;
};

// What the reference computes, logical NCHW, in double. `dx` per input; `grads` per
// parameter (empty where the parameter has none); `params` after forward (empty: unchanged).
struct OpRef {
  std::vector<double> y;
  std::vector<std::vector<double>> dx, grads, params;
};

// What a reference is given.
struct RefInput {
  const Layer& layer;
  std::vector<Shape> in;  // per input, one sample
  std::int64_t n;
  bool train;
  std::uint64_t dropout_key;
  const OpData& data;
};

struct OpCase {
  std::string name;
  Graph graph;  // the layer under test is named "op"
  std::int64_t n = 2;
  std::int64_t capacity = 0;  // > n: buffers for a larger plan batch (a partial last batch)
  bool train = true;
  std::function<void(OpData&)> tweak = {};  // after the random data: ties, tails, zeros
  bool finite_differences = true;           // false where L has no derivative (ties of a max)
};

struct Tolerance {
  double atol = 0, rtol = 0;
};

// What rounding to the dtype adds against a double reference of the rounded inputs: the
// output's own rounding (2^-9 relative in bf16, 2^-12 in fp16), and the rounding of what the
// op kept for backward (an activation's y: tanh's 1 - y^2 near y = 1 loses most of its bits
// in bf16, hence the absolute terms). Measured worst cases over every op are about a third
// of these.
Tolerance dtype_tolerance(DType dtype, Tolerance fp32);
// The data of a case as the dtype holds it: inputs, dY and the parameters of layers whose
// parameters are in the dtype (detail::params_in_dtype) rounded (fp32: unchanged).
OpData rounded(OpData data, const Layer& layer, DType dtype);
std::vector<std::vector<float>> rounded(std::vector<std::vector<float>> values, DType dtype);

struct OpSpec {
  std::vector<OpCase> (*cases)();
  OpRef (*reference)(const RefInput&);
  Tolerance forward, backward;
  // Between layouts (and for nchw between thread counts: always bit for bit) and against CUDA.
  Tolerance layouts, cuda;
};

// A one-op graph: input (c, h, w) -> op "op" -> flatten -> linear(10) (no second flatten
// after a flatten).
Graph one_op_graph(LayerDef op, Shape input);
// Random logical data for a case (seeded by its name), with the case's tweak applied.
OpData random_data(const OpCase& c, const Graph& graph);
// The dropout key a run gives the layer at `step` (the executors' stream_key).
std::uint64_t dropout_key(const Layer& layer, std::uint64_t step = 7);

// How a backward treats one input's gradient.
enum class DxMode { overwrite, accumulate, null };
// The ways Backward and Cuda run: every dx overwritten; mixed per input (input 0
// accumulates, 1 is null, 2 overwrites, ...; a single input accumulates); every dx null;
// and with several inputs, every dx accumulated.
std::vector<std::vector<DxMode>> dx_passes(std::size_t inputs);
const char* to_string(DxMode m);

// What a run produced, logical NCHW: y; per input dx (empty where null); per parameter its
// gradient (empty where none) and its value after forward.
struct Outputs {
  std::vector<float> y;
  std::vector<std::vector<float>> dx, grads, params;
};
// The CPU op on `data` in `layout` on `threads` threads: forward, then backward with `modes`
// (accumulating into `before`, logical, per input).
Outputs run_cpu(const OpCase& c, Layout layout, int threads, const OpData& data, const std::vector<DxMode>& modes,
                const std::vector<std::vector<float>>& before, CpuConv conv = CpuConv::automatic,
                DType dtype = DType::f32);
// Random starting values of every input's gradient (for accumulate).
std::vector<std::vector<float>> random_dx(const OpCase& c, const Graph& graph);
// y, dx, gradients and parameters of `got` against `want` (CPU or CUDA) with one tolerance.
void expect_outputs(const Outputs& want, const Outputs& got, const OpCase& c, Tolerance tol, const std::string& what);

// The passes. Each loops over spec.cases() and returns skipped (with GTEST_SKIP's reason)
// when the CPU refuses the variant.
void check_forward(const OpSpec& spec, const Variant& v);
void check_backward(const OpSpec& spec, const Variant& v);
void check_gradcheck(const OpSpec& spec, const Variant& v);
void check_layouts(const OpSpec& spec, const Variant& v);
void check_cuda(const OpSpec& spec, const Variant& v);  // backend_ops_cuda.cpp

// The n samples' elements of one sample shape.
inline std::size_t count(const Shape& s, std::int64_t n) { return static_cast<std::size_t>(n * s.elements()); }
// Offset of (b, c, y, x) in a logical NCHW tensor of one-sample shape s.
inline std::size_t at(const Shape& s, std::int64_t b, std::int64_t c, std::int64_t y, std::int64_t x) {
  return static_cast<std::size_t>(((b * s.c + c) * s.h + y) * s.w + x);
}

}  // namespace kiln::test::ops

// One op's tests: TEST_Ps of every pass over kVariants, from an OpSpec. kiln_unit_tests
// compiles the host passes, kiln_gpu_tests (KILN_BACKEND_OPS_CUDA) the Cuda pass, from the
// same source files.
#ifdef KILN_BACKEND_OPS_CUDA
#define KILN_BACKEND_OPS_PASSES(Op, spec) \
  TEST_P(Op, Cuda) { ::kiln::test::ops::check_cuda(spec, GetParam()); }
#else
#define KILN_BACKEND_OPS_PASSES(Op, spec)                                            \
  TEST_P(Op, Forward) { ::kiln::test::ops::check_forward(spec, GetParam()); }        \
  TEST_P(Op, Backward) { ::kiln::test::ops::check_backward(spec, GetParam()); }      \
  TEST_P(Op, GradCheck) { ::kiln::test::ops::check_gradcheck(spec, GetParam()); }    \
  TEST_P(Op, Layouts) { ::kiln::test::ops::check_layouts(spec, GetParam()); }
#endif

#define KILN_BACKEND_OPS(Op, spec)                                                   \
  class Op : public ::testing::TestWithParam<::kiln::test::ops::Variant> {};         \
  KILN_BACKEND_OPS_PASSES(Op, spec)                                                  \
  INSTANTIATE_TEST_SUITE_P(BackendOps, Op, ::testing::ValuesIn(::kiln::test::ops::kVariants), \
                           ::kiln::test::ops::variant_name)

// conv's host passes also run on kiln's kernels alone and on oneDNN's alone (skipped in a
// build without it); the Cuda pass compares against the CPU's default kernels only.
#ifdef KILN_BACKEND_OPS_CUDA
#define KILN_BACKEND_OPS_CONV_KERNELS(Op)
#else
#define KILN_BACKEND_OPS_CONV_KERNELS(Op)                                                              \
  INSTANTIATE_TEST_SUITE_P(BackendOpsKernels, Op, ::testing::ValuesIn(::kiln::test::ops::kConvVariants), \
                           ::kiln::test::ops::variant_name)
#endif
