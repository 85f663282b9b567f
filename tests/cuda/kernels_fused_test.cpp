// kiln's fused batchnorm + activation kernels (cuda/kernels/batchnorm.cu) against the unfused
// pair they replace, run on the same data: batchnorm_forward then activation_forward, and
// activation_backward (reading y or x as OpDef::backward_needs says) then batchnorm_backward.
// Every output must be bitwise the unfused one: y, dx (written, accumulated, not asked for),
// dweight, dbias, the running statistics and the saved ones, in fp32, bf16 and fp16, NCHW and
// NHWC, training and evaluation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels_test_util.hpp"
#include "math/half.hpp"

namespace kiln::test {
namespace {

using cuda::Dims4;
using Bytes = std::vector<std::uint8_t>;

std::size_t width(DType t) { return t == DType::f32 ? 4 : 2; }

// Values as the dtype stores them (fp32's, bf16's or fp16's bit patterns), and back.
Bytes encode(DType t, const std::vector<float>& values) {
  Bytes out(values.size() * width(t));
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (t == DType::f32) {
      std::memcpy(&out[4 * i], &values[i], 4);
      continue;
    }
    const std::uint16_t bits = t == DType::f16 ? math::float_to_fp16_bits(values[i]) : math::float_to_bf16_bits(values[i]);
    std::memcpy(&out[2 * i], &bits, 2);
  }
  return out;
}

float decode(DType t, const Bytes& bytes, std::size_t i) {
  if (t == DType::f32) {
    float v = 0.0f;
    std::memcpy(&v, &bytes[4 * i], 4);
    return v;
  }
  std::uint16_t bits = 0;
  std::memcpy(&bits, &bytes[2 * i], 2);
  return t == DType::f16 ? math::fp16_bits_to_float(bits) : math::bf16_bits_to_float(bits);
}

// `got` bit for bit `want`, element by element (of t's width); names the count and the first
// few that differ. `want` must hold no NaN: a NaN-filled output nobody wrote is not a match.
void expect_same_bits(DType t, const Bytes& want, const Bytes& got, const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what << ": sizes differ";
  const std::size_t count = want.size() / width(t);
  std::size_t differ = 0, nan = 0;
  std::ostringstream first;
  for (std::size_t i = 0; i < count; ++i) {
    if (std::isnan(decode(t, want, i))) ++nan;
    if (std::memcmp(&want[i * width(t)], &got[i * width(t)], width(t)) == 0) continue;
    if (differ < 5) first << "\n    [" << i << "]: fused " << decode(t, got, i) << ", unfused " << decode(t, want, i);
    ++differ;
  }
  EXPECT_EQ(nan, 0u) << what << ": the unfused result holds " << nan << " NaN of " << count;
  EXPECT_EQ(differ, 0u) << what << ": " << differ << " of " << count << " elements differ bitwise; first:" << first.str();
}

void expect_same_bits(const std::vector<float>& want, const std::vector<float>& got, const std::string& what) {
  expect_same_bits(DType::f32, encode(DType::f32, want), encode(DType::f32, got), what);
}

enum class Dx { written, accumulated, none };

const char* dx_name(Dx dx) {
  switch (dx) {
    case Dx::written: return "dx written";
    case Dx::accumulated: return "dx accumulated";
    case Dx::none: return "no dx";
  }
  return "?";
}

struct Case {
  OpKind act;
  DType dtype;
  Dims4 dims;
  bool train;
  Dx dx;
  bool affine = true;  // false: weight and bias fixed (nullptr, read as 1 and 0)
};

std::string describe(const Case& k) {
  const Dims4& d = k.dims;
  return std::string(op_name(k.act)) + ", " + std::string(to_string(k.dtype)) + ", " + layout_name(d.nhwc) + " " +
         std::to_string(d.n) + "x" + std::to_string(d.c) + "x" + std::to_string(d.h) + "x" + std::to_string(d.w) + ", " +
         (k.train ? "train" : "eval") + ", " + dx_name(k.dx) + (k.affine ? "" : ", fixed weight and bias");
}

// One forward and backward of the unfused pair and of the fused pair on the same inputs.
void check_fused(const Case& k, std::uint32_t seed) {
  SCOPED_TRACE(describe(k));
  const DType t = k.dtype;
  const Dims4& d = k.dims;
  const auto count = static_cast<std::size_t>(d.count()), c = static_cast<std::size_t>(d.c);
  const float slope = 0.1f, momentum = 0.1f, eps = 1e-5f;
  Layer layer;
  layer.op = k.act;
  const bool saves_output = detail::op_def(k.act).backward_needs(layer).output;

  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(0.5f, 2.0f);
  auto random = [&](std::size_t size, float scale, float shift) {
    std::vector<float> v(size);
    for (float& e : v) e = scale * normal(rng) + shift;
    return v;
  };
  std::vector<float> var0(c);
  for (float& v : var0) v = uniform(rng);
  const std::vector<float> x0 = random(count, 2.0f, 0.5f), dy0 = random(count, 1.0f, 0.0f),
                           dx0 = random(count, 1.0f, 0.0f), weight0 = random(c, 0.5f, 1.0f),
                           bias0 = random(c, 0.5f, 0.0f), mean0 = random(c, 0.5f, 0.3f);
  const std::vector<float> nan_values(count, kNaN), nan_stats(c, kNaN);

  DeviceBuffer<std::uint8_t> x(encode(t, x0)), dy(encode(t, dy0));
  DeviceBuffer<float> weight(weight0), bias(bias0);
  const float* w = k.affine ? weight.get() : nullptr;
  const float* b = k.affine ? bias.get() : nullptr;

  // Unfused: z = batchnorm(x), y = act(z); g = act'(saved, dy), dx = batchnorm'(g).
  DeviceBuffer<std::uint8_t> z(encode(t, nan_values)), y(encode(t, nan_values)), g(encode(t, nan_values));
  DeviceBuffer<float> running_mean(mean0), running_var(var0), save_mean(nan_stats), save_invstd(nan_stats);
  cuda::batchnorm_forward(t, k.train, x.get(), d, z.get(), w, b, running_mean.get(), running_var.get(), save_mean.get(),
                          save_invstd.get(), momentum, eps, nullptr);
  cuda::activation_forward(t, k.act, slope, z.get(), y.get(), d.count(), nullptr);

  DeviceBuffer<std::uint8_t> fused_y(encode(t, nan_values));
  DeviceBuffer<float> fused_running_mean(mean0), fused_running_var(var0), fused_save_mean(nan_stats),
      fused_save_invstd(nan_stats), save_alpha_beta(std::vector<float>(2 * c, kNaN));
  cuda::batchnorm_act_forward(t, k.train, k.act, slope, x.get(), d, fused_y.get(), w, b, fused_running_mean.get(),
                              fused_running_var.get(), fused_save_mean.get(), fused_save_invstd.get(),
                              save_alpha_beta.get(), momentum, eps, nullptr);

  expect_same_bits(t, y.download(), fused_y.download(), "y");
  expect_same_bits(running_mean.download(), fused_running_mean.download(), "running_mean");
  expect_same_bits(running_var.download(), fused_running_var.download(), "running_var");
  expect_same_bits(save_mean.download(), fused_save_mean.download(), "save_mean");
  expect_same_bits(save_invstd.download(), fused_save_invstd.download(), "save_invstd");
  for (float v : save_alpha_beta.download()) ASSERT_TRUE(std::isfinite(v)) << "save_alpha_beta not all written: " << v;

  const Bytes dx_before = encode(t, k.dx == Dx::accumulated ? dx0 : nan_values);
  const bool accumulate = k.dx == Dx::accumulated;
  DeviceBuffer<std::uint8_t> dx(dx_before), fused_dx(dx_before);
  void* dx_out = k.dx == Dx::none ? nullptr : dx.get();
  void* fused_dx_out = k.dx == Dx::none ? nullptr : fused_dx.get();
  DeviceBuffer<float> dweight(nan_stats), dbias(nan_stats), fused_dweight(nan_stats), fused_dbias(nan_stats);

  cuda::activation_backward(t, k.act, slope, saves_output ? y.get() : z.get(), dy.get(), g.get(), false, d.count(), nullptr);
  cuda::batchnorm_backward(t, k.train, x.get(), g.get(), d, dx_out, accumulate, w, dweight.get(), dbias.get(), save_mean.get(),
                           save_invstd.get(), running_mean.get(), running_var.get(), eps, nullptr);
  cuda::batchnorm_act_backward(t, k.train, k.act, slope, x.get(), dy.get(), d, fused_dx_out, accumulate, w, b,
                               fused_dweight.get(), fused_dbias.get(), fused_save_mean.get(), fused_save_invstd.get(),
                               save_alpha_beta.get(), fused_running_mean.get(), fused_running_var.get(), eps, nullptr);

  if (k.dx == Dx::none) {
    EXPECT_TRUE(fused_dx.download() == dx_before) << "dx was not asked for, but written";
  } else {
    expect_same_bits(t, dx.download(), fused_dx.download(), "dx");
  }
  expect_same_bits(dweight.download(), fused_dweight.download(), "dweight");
  expect_same_bits(dbias.download(), fused_dbias.download(), "dbias");
}

constexpr OpKind kActivations[] = {OpKind::relu, OpKind::leaky_relu, OpKind::gelu,
                                   OpKind::silu, OpKind::sigmoid,    OpKind::tanh};

TEST(CudaBatchnormAct, MatchesUnfusedBitwise) {
  KILN_REQUIRE_GPU();
  // Odd sizes; 3*7*3 = 63 values per channel, fewer than the block's threads, and
  // 2*13*11 = 286, more.
  const Dims4 shapes[] = {{3, 5, 7, 3, false}, {2, 3, 13, 11, false}};
  std::uint32_t seed = 1;
  for (OpKind act : kActivations)
    for (DType dtype : {DType::f32, DType::bf16, DType::f16})
      for (const Dims4& shape : shapes)
        for (bool nhwc : {false, true})
          for (bool train : {true, false})
            for (Dx dx : {Dx::written, Dx::accumulated, Dx::none}) {
              Dims4 dims = shape;
              dims.nhwc = nhwc;
              check_fused({.act = act, .dtype = dtype, .dims = dims, .train = train, .dx = dx}, seed++);
              if (::testing::Test::HasFailure()) return;  // one case's report, not hundreds
            }
}

// weight: false, bias: false: nullptr parameters read as 1 and 0, in both pairs.
TEST(CudaBatchnormAct, FixedWeightAndBias) {
  KILN_REQUIRE_GPU();
  std::uint32_t seed = 1000;
  for (OpKind act : kActivations)
    for (DType dtype : {DType::f32, DType::bf16})
      for (bool train : {true, false})
        check_fused({.act = act, .dtype = dtype, .dims = {3, 5, 7, 3, true}, .train = train, .dx = Dx::accumulated,
                     .affine = false},
                    seed++);
}

// A single value per channel (n = 1, 1x1): variance 0, the running variance keeps the biased 0.
TEST(CudaBatchnormAct, OneValuePerChannel) {
  KILN_REQUIRE_GPU();
  std::uint32_t seed = 2000;
  for (OpKind act : kActivations)
    for (bool train : {true, false})
      check_fused({.act = act, .dtype = DType::f32, .dims = {1, 6, 1, 1, false}, .train = train, .dx = Dx::written}, seed++);
}

// Only the six activations fuse; any other op is refused before anything is launched.
TEST(CudaBatchnormAct, RejectsOtherOps) {
  const Dims4 d{2, 3, 4, 4, false};
  try {
    cuda::batchnorm_act_forward(DType::f32, true, OpKind::conv, 0.0f, nullptr, d, nullptr, nullptr, nullptr, nullptr, nullptr,
                                nullptr, nullptr, nullptr, 0.1f, 1e-5f, nullptr);
    ADD_FAILURE() << "batchnorm_act_forward took conv";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), "batchnorm_act_forward: 'conv' is not an activation");
  }
  EXPECT_THROW(cuda::batchnorm_act_backward(DType::f32, true, OpKind::batchnorm, 0.0f, nullptr, nullptr, d, nullptr, false,
                                            nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                            1e-5f, nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace kiln::test
