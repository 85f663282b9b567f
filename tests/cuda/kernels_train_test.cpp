// kiln's loss, optimizer and data-staging CUDA kernels (cuda/kernels/loss.cu, sgd.cu,
// augment.cu) against the host loops of the CPU executor (src/backend/cpu_executor.cpp),
// which call the same math/ functions. Tolerances, |gpu - cpu| <= atol + rtol*|cpu|: summed
// loss 1e-5 relative (atomics add in another order), correct count exact, dlogits
// 1e-6/1e-5 (device expf); SGD weights and momentum 1e-6/1e-6 after three steps (fused
// multiply-adds); staged pixels 1e-6/1e-6; gathered labels exact.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels_test_util.hpp"
#include "cuda/kernels.hpp"
#include "math/augment.hpp"
#include "math/half.hpp"
#include "math/loss.hpp"
#include "math/sgd.hpp"

namespace kiln::test {
namespace {

using cuda::Dims4;

// ---- softmax cross-entropy ----------------------------------------------------------------

void check_loss(std::int64_t n, float smoothing, float grad_scale, bool with_grad) {
  SCOPED_TRACE("n " + std::to_string(n) + ", smoothing " + std::to_string(smoothing) + ", grad_scale " +
               std::to_string(grad_scale) + (with_grad ? "" : ", no dlogits"));
  const int classes = 10;
  std::mt19937 rng(static_cast<std::uint32_t>(n));
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(static_cast<std::size_t>(n * classes));
  for (float& v : logits) v = normal(rng);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  for (auto& l : labels) l = static_cast<std::int32_t>(rng() % classes);
  // Ties: an all-equal row is "correct" only for label 0 (the first maximum).
  for (int k = 0; k < classes; ++k) logits[static_cast<std::size_t>(k)] = 1.0f, logits[static_cast<std::size_t>(classes + k)] = 1.0f;
  labels[0] = 0, labels[1] = 3;

  // The CPU executor's loss(): per row, loss summed in double.
  std::vector<float> want_grad(logits.size(), 0.0f);
  double want_loss = 0.0;
  unsigned long long want_correct = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto s = math::softmax_cross_entropy(logits.data() + i * classes, classes, labels[static_cast<std::size_t>(i)], smoothing,
                                               grad_scale, want_grad.data() + i * classes);
    want_loss += s.loss;
    want_correct += s.correct ? 1 : 0;
  }

  // The accumulators start non-zero: the kernel adds to them.
  DeviceBuffer<float> d_logits(logits), d_grad(std::vector<float>(logits.size(), kNaN));
  DeviceBuffer<std::int32_t> d_labels(labels);
  DeviceBuffer<double> loss_sum(std::vector<double>{1.5});
  DeviceBuffer<unsigned long long> correct(std::vector<unsigned long long>{2});
  cuda::softmax_cross_entropy(DType::f32, d_logits.get(), d_labels.get(), n, classes, smoothing, grad_scale, nullptr,
                              with_grad ? d_grad.get() : nullptr, loss_sum.get(), correct.get(), nullptr);
  expect_near(std::vector<double>{want_loss}, std::vector<double>{loss_sum.download()[0] - 1.5}, 1e-6, 1e-5, "loss sum");
  EXPECT_EQ(correct.download()[0] - 2, want_correct) << "correct count";
  if (with_grad)
    expect_near(want_grad, d_grad.download(), 1e-6, 1e-5, "dlogits");
  else
    expect_near(std::vector<float>(logits.size(), kNaN), d_grad.download(), 0.0, 0.0, "dlogits must stay unwritten");
}

TEST(CudaLoss, SoftmaxCrossEntropyMatchesCpu) {
  KILN_REQUIRE_GPU();
  check_loss(37, 0.0f, 1.0f / 37.0f, true);
  check_loss(37, 0.1f, 1.0f / 37.0f, true);
  check_loss(300, 0.2f, 1.0f, true);  // more samples than a block's 128 threads; sum (not mean) scaling
  check_loss(300, 0.0f, 1.0f, false);
}

// The batch's loss is summed in a fixed order (no atomics): the same bits every launch, which
// bit-exact resume and identical metrics.jsonl files rely on.
TEST(CudaLoss, TheLossSumIsDeterministic) {
  KILN_REQUIRE_GPU();
  const std::int64_t n = 1000, classes = 10;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(static_cast<std::size_t>(n * classes));
  for (float& v : logits) v = normal(rng);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  for (auto& l : labels) l = static_cast<std::int32_t>(rng() % classes);
  DeviceBuffer<float> d_logits(logits);
  DeviceBuffer<std::int32_t> d_labels(labels);
  std::vector<double> sums;
  for (int run = 0; run < 20; ++run) {
    DeviceBuffer<double> loss_sum(std::vector<double>{0.0});
    cuda::softmax_cross_entropy(DType::f32, d_logits.get(), d_labels.get(), n, static_cast<int>(classes), 0.1f, 1.0f, nullptr,
                                nullptr, loss_sum.get(), nullptr, nullptr);
    sums.push_back(loss_sum.download()[0]);
  }
  for (double v : sums) EXPECT_EQ(v, sums[0]);
}

// ---- SGD ----------------------------------------------------------------------------------

TEST(CudaSgd, MatchesHostUpdate) {
  KILN_REQUIRE_GPU();
  struct Case {
    const char* what;
    math::SgdHyper h;
  };
  const Case cases[] = {
      {"plain", {0.1f, 0.0f, 0.0f, 0.0f, false}},
      {"momentum", {0.05f, 0.9f, 0.0f, 0.0f, false}},
      {"nesterov", {0.05f, 0.9f, 0.0f, 0.0f, true}},
      {"coupled decay", {0.05f, 0.9f, 5e-4f, 0.0f, false}},
      {"decoupled decay, nesterov", {0.2f, 0.85f, 0.0f, 0.05f, true}},
      {"both decays", {0.1f, 0.5f, 1e-3f, 0.01f, false}},
  };
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::size_t count = 4099;
    std::vector<float> w(count), m(count, 0.0f);
    for (float& v : w) v = normal(rng);
    DeviceBuffer<float> d_w(w), d_m(m), d_g(count);
    for (int step = 0; step < 3; ++step) {
      std::vector<float> g(count);
      for (float& v : g) v = normal(rng);
      for (std::size_t e = 0; e < count; ++e) math::sgd_update(w[e], m[e], g[e], c.h);
      d_g.upload(g);
      cuda::sgd_update(d_w.get(), d_m.get(), d_g.get(), static_cast<std::int64_t>(count), c.h, nullptr, nullptr);
    }
    expect_near(w, d_w.download(), 1e-6, 1e-6, "weights");
    expect_near(m, d_m.download(), 1e-6, 1e-6, "momentum");
  }
  // Without momentum the buffer is not needed: null must be fine.
  std::vector<float> w(100, 1.0f), g(100, 0.5f);
  DeviceBuffer<float> d_w(w), d_g(g);
  const math::SgdHyper plain{0.1f, 0.0f, 0.0f, 0.0f, false};
  cuda::sgd_update(d_w.get(), nullptr, d_g.get(), 100, plain, nullptr, nullptr);
  float unused = 0.0f;
  for (std::size_t e = 0; e < w.size(); ++e) math::sgd_update(w[e], unused, g[e], plain);
  expect_near(w, d_w.download(), 0.0, 1e-6, "weights without a momentum buffer");
}

// ---- staging a batch ----------------------------------------------------------------------

// A dataset of 7 images of 3 x 8 x 6 (not square, so that height and width cannot be
// swapped unnoticed); a batch of 5 picks images by index, with repeats.
struct Fixture {
  static constexpr int C = 3, H = 8, W = 6, kImages = 7;
  std::vector<std::uint8_t> images, labels;
  std::vector<std::int64_t> indices{5, 0, 3, 3, 6};
  std::vector<math::AugmentParams> augment;
  std::vector<float> mean{0.49f, 0.48f, 0.45f}, inv_std{1.0f / 0.25f, 1.0f / 0.24f, 1.0f / 0.26f};

  Fixture() {
    std::mt19937 rng(9);
    images.resize(static_cast<std::size_t>(kImages * C * H * W));
    for (auto& p : images) p = static_cast<std::uint8_t>(rng() % 256);
    for (int i = 0; i < kImages; ++i) labels.push_back(static_cast<std::uint8_t>((i * 3 + 1) % 10));
    auto params = [](int dy, int dx, int flip) {
      math::AugmentParams a;
      a.dy = static_cast<std::int16_t>(dy), a.dx = static_cast<std::int16_t>(dx), a.flip = static_cast<std::uint8_t>(flip);
      return a;
    };
    // None; shifts both ways, with and without flips; a shift past the whole image.
    augment = {params(0, 0, 0), params(2, -1, 1), params(-3, 4, 0), params(1, 1, 1), params(-9, 7, 1)};
  }

  std::int64_t n() const { return static_cast<std::int64_t>(indices.size()); }

  // The CPU executor's stage(), NCHW.
  std::vector<float> want(math::PadMode pad, bool augmented) const {
    std::vector<float> out(static_cast<std::size_t>(n() * C * H * W));
    for (std::int64_t i = 0; i < n(); ++i) {
      const std::uint8_t* image = images.data() + indices[static_cast<std::size_t>(i)] * C * H * W;
      const math::AugmentParams a = augmented ? augment[static_cast<std::size_t>(i)] : math::AugmentParams{};
      for (int c = 0; c < C; ++c)
        for (int y = 0; y < H; ++y)
          for (int x = 0; x < W; ++x)
            out[static_cast<std::size_t>(((i * C + c) * H + y) * W + x)] =
                math::augmented_pixel(image, H, W, c, y, x, a, pad, mean[static_cast<std::size_t>(c)], inv_std[static_cast<std::size_t>(c)]);
    }
    return out;
  }
};

TEST(CudaStage, MatchesCpuStaging) {
  KILN_REQUIRE_GPU();
  const Fixture f;
  DeviceBuffer<std::uint8_t> images(f.images);
  DeviceBuffer<std::int64_t> indices(f.indices);
  DeviceBuffer<math::AugmentParams> augment(f.augment);
  DeviceBuffer<float> mean(f.mean), inv_std(f.inv_std);
  for (math::PadMode pad : {math::PadMode::zero, math::PadMode::reflect})
    for (bool augmented : {true, false})
      for (bool nhwc : {false, true}) {
        SCOPED_TRACE(std::string(pad == math::PadMode::zero ? "zero" : "reflect") + " padding, " +
                     (augmented ? "augmented" : "no augmentation") + ", " + layout_name(nhwc));
        const Dims4 d{f.n(), Fixture::C, Fixture::H, Fixture::W, nhwc};
        DeviceBuffer<float> out(std::vector<float>(static_cast<std::size_t>(d.count()), kNaN));
        cuda::stage_batch(DType::f32, images.get(), indices.get(), augmented ? augment.get() : nullptr, pad, mean.get(), inv_std.get(),
                          out.get(), d, nullptr);
        expect_near(f.want(pad, augmented), from_layout(out.download(), d), 1e-6, 1e-6, "staged input", &d);
      }
}

// By hand: zero padding normalizes to -mean * inv_std; a flip reads the mirrored column.
TEST(CudaStage, PaddingAndFlipByHand) {
  KILN_REQUIRE_GPU();
  const std::vector<std::uint8_t> image{0, 51, 102, 255};  // 1 channel, 1 x 4
  const std::vector<std::int64_t> index{0};
  math::AugmentParams a;
  a.dx = 2;
  a.flip = 1;
  DeviceBuffer<std::uint8_t> d_image(image);
  DeviceBuffer<std::int64_t> d_index(index);
  DeviceBuffer<math::AugmentParams> d_a(std::vector<math::AugmentParams>{a});
  DeviceBuffer<float> mean(std::vector<float>{0.5f}), inv_std(std::vector<float>{2.0f}), out(4);
  const Dims4 d{1, 1, 1, 4, false};
  // Output x reads source 3 - x + 2: 5, 4, 3, 2 -> pad, pad, 255, 102.
  cuda::stage_batch(DType::f32, d_image.get(), d_index.get(), d_a.get(), math::PadMode::zero, mean.get(), inv_std.get(), out.get(), d, nullptr);
  expect_near(std::vector<float>{-1.0f, -1.0f, 1.0f, (102.0f / 255.0f - 0.5f) * 2.0f}, out.download(), 1e-6, 1e-6, "zero pad");
  // Reflect: 5 -> 1, 4 -> 2 (edge not repeated).
  cuda::stage_batch(DType::f32, d_image.get(), d_index.get(), d_a.get(), math::PadMode::reflect, mean.get(), inv_std.get(), out.get(), d,
                    nullptr);
  expect_near(std::vector<float>{(51.0f / 255.0f - 0.5f) * 2.0f, (102.0f / 255.0f - 0.5f) * 2.0f, 1.0f,
                                 (102.0f / 255.0f - 0.5f) * 2.0f},
              out.download(), 1e-6, 1e-6, "reflect pad");
}

TEST(CudaStage, GatherLabels) {
  KILN_REQUIRE_GPU();
  const Fixture f;
  DeviceBuffer<std::uint8_t> labels(f.labels);
  DeviceBuffer<std::int64_t> indices(f.indices);
  DeviceBuffer<std::int32_t> out(std::vector<std::int32_t>(f.indices.size(), -1));
  cuda::gather_labels(labels.get(), indices.get(), f.n(), out.get(), nullptr);
  std::vector<std::int32_t> want;
  for (std::int64_t i : f.indices) want.push_back(f.labels[static_cast<std::size_t>(i)]);
  EXPECT_EQ(out.download(), want);
}

}  // namespace
}  // namespace kiln::test

namespace kiln::test {
namespace {

// ---- mixed precision: casts and the device loss scale (cuda/kernels/cast.cu) --------------

// The dtype copies of fp32 weights round exactly as the CPU oracle (math/half.hpp): to
// nearest, ties to even, overflow to infinity, fp16 subnormals kept, NaN kept; widening back
// is exact. Bit for bit, on values chosen to hit each rule.
TEST(CudaMixedPrecision, CastsRoundAsTheCpuOracle) {
  KILN_REQUIRE_GPU();
  std::vector<float> values{0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 65519.0f, 65520.0f, 1e30f, -1e30f, 3.0e-8f, 6.0e-5f,
                            1.0009765625f, 1.00048828125f, 1.00146484375f, 3.14159265f, 1.0f / 3.0f, INFINITY, -INFINITY,
                            NAN, 1.00390625f, 1.005859375f, 3.0e38f};
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 100.0f);
  for (int i = 0; i < 1000; ++i) values.push_back(normal(rng));
  DeviceBuffer<float> src(values);
  for (DType dtype : {DType::f16, DType::bf16}) {
    SCOPED_TRACE(std::string(to_string(dtype)));
    DeviceBuffer<std::uint16_t> half(values.size());
    DeviceBuffer<float> back(values.size());
    cuda::cast_from_f32(dtype, src.get(), half.get(), static_cast<std::int64_t>(values.size()), nullptr);
    cuda::cast_to_f32(dtype, half.get(), back.get(), static_cast<std::int64_t>(values.size()), nullptr);
    const std::vector<std::uint16_t> bits = half.download();
    const std::vector<float> widened = back.download();
    for (std::size_t i = 0; i < values.size(); ++i) {
      const float want = math::round_to(dtype, values[i]);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(widened[i])) << "value " << values[i];
        continue;
      }
      const std::uint16_t want_bits =
          dtype == DType::f16 ? math::float_to_fp16_bits(values[i]) : math::float_to_bf16_bits(values[i]);
      EXPECT_EQ(bits[i], want_bits) << "value " << values[i];
      EXPECT_EQ(math::float_bits(widened[i]), math::float_bits(want)) << "value " << values[i];
    }
  }
}

cuda::LossScaler read_scaler(const DeviceBuffer<cuda::LossScaler>& s) { return s.download()[0]; }

// The device loss scale steps as the CPU's LossScale (src/backend/cpu_executor.cpp): an
// overflow above scale 1 skips (the update leaves the weights alone) and halves the scale;
// at scale 1 it is a divergence, not a skip; growth_interval good steps double it; the
// step's scale is reported; the update divides the gradient by the scale.
TEST(CudaMixedPrecision, LossScaleStepsAsTheCpu) {
  KILN_REQUIRE_GPU();
  DeviceBuffer<cuda::LossScaler> scaler(std::vector<cuda::LossScaler>{{1024.0f, 0u, 0}});
  DeviceBuffer<unsigned int> flag(std::vector<unsigned int>{1u});
  DeviceBuffer<float> used(std::vector<float>{0.0f});
  std::vector<float> w0{1.0f, -2.0f, 3.0f};
  DeviceBuffer<float> w(w0), m(std::vector<float>(3, 0.0f)), g(std::vector<float>{512.0f, 1024.0f, -2048.0f});
  const math::SgdHyper h{0.5f, 0.0f, 0.0f, 0.0f, false};

  // An overflowed step: skipped, weights untouched, scale halved.
  cuda::loss_scale_check(scaler.get(), flag.get(), used.get(), nullptr);
  EXPECT_EQ(read_scaler(scaler).skip, 1u);
  EXPECT_EQ(used.download()[0], 1024.0f);
  cuda::sgd_update(w.get(), m.get(), g.get(), 3, h, scaler.get(), nullptr);
  cuda::loss_scale_advance(scaler.get(), 3, nullptr);
  EXPECT_EQ(w.download(), w0);
  EXPECT_EQ(read_scaler(scaler).scale, 512.0f);
  EXPECT_EQ(read_scaler(scaler).skip, 0u);

  // Good steps: the gradient unscaled (512 -> 1, ...), and after 3 of them the scale doubles.
  flag.upload({0u});
  std::vector<float> want = w0;
  for (int step = 0; step < 3; ++step) {
    cuda::loss_scale_check(scaler.get(), flag.get(), used.get(), nullptr);
    cuda::sgd_update(w.get(), m.get(), g.get(), 3, h, scaler.get(), nullptr);
    cuda::loss_scale_advance(scaler.get(), 3, nullptr);
    float unused = 0.0f;
    const std::vector<float> grads{512.0f, 1024.0f, -2048.0f};
    for (std::size_t e = 0; e < 3; ++e) math::sgd_update(want[e], unused, grads[e] * (1.0f / 512.0f), h);
  }
  EXPECT_EQ(w.download(), want);
  EXPECT_EQ(read_scaler(scaler).scale, 1024.0f);
  EXPECT_EQ(read_scaler(scaler).good_steps, 0);

  // At scale 1 an overflow is not skipped: the divergence guard sees it.
  scaler.upload({{1.0f, 0u, 5}});
  flag.upload({1u});
  cuda::loss_scale_check(scaler.get(), flag.get(), used.get(), nullptr);
  EXPECT_EQ(read_scaler(scaler).skip, 0u);
}

}  // namespace
}  // namespace kiln::test
