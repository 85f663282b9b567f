// The features of the airbench recipe, each against a direct computation: lr-independent
// weight decay, layers that stop training, lookahead arithmetic, dirac and whitening
// initialization, alternating flips, test-time augmentation, and the recipe in the spec.
#include <gtest/gtest.h>

#include <cmath>

#include "backend/executor.hpp"
#include "data/loader.hpp"
#include "kiln/kiln.hpp"
#include "plan/evaluation.hpp"
#include "test_util.hpp"
#include "train/init.hpp"
#include "train/optimizer.hpp"

namespace kiln::test {
namespace {

Graph two_groups() {
  GraphBuilder b("g", Shape::chw(3, 8, 8), 10);
  b.add(layers::conv(4, 3).pad(1).named("c").train_epochs(3))
      .add(layers::batchnorm().weight(false).lr_scale(64).named("bn"))
      .add(layers::flatten())
      .add(layers::linear(10).bias(false).named("fc"));
  return b.build();
}

TEST(Recipe, LrIndependentDecayIsTheSameInAbsoluteTerms) {
  Graph g = two_groups();
  TrainConfig c;
  c.lr = 0.01;
  c.weight_decay = 0.002;
  c.decay_mode = DecayMode::lr_independent;
  auto h = detail::sgd_hyper(g, c, 0.5, 0);
  // params: c.weight, c.bias, bn.weight (fixed), bn.bias, bn.running_*, fc.weight
  for (std::size_t p : {0u, 1u, 3u, 6u}) {
    const double applied = static_cast<double>(h[p].lr) * h[p].weight_decay;  // per step, coupled
    EXPECT_NEAR(applied, 0.002 * 0.5, 1e-9) << g.params()[p].name;
  }
  EXPECT_NEAR(h[3].lr, 0.01 * 64 * 0.5, 1e-7);  // bn.bias at 64x
  EXPECT_NEAR(h[6].lr, 0.01 * 0.5, 1e-9);
  c.decay_mode = DecayMode::coupled;
  EXPECT_FLOAT_EQ(detail::sgd_hyper(g, c, 0.5, 0)[3].weight_decay, 0.002f);
  c.decay_mode = DecayMode::decoupled;
  EXPECT_FLOAT_EQ(detail::sgd_hyper(g, c, 0.5, 0)[3].decoupled_decay, 0.002f);
}

TEST(Recipe, TrainEpochsFreezesTheLayerAfterwards) {
  Graph g = two_groups();
  TrainConfig c;
  c.weight_decay = 0.1;
  EXPECT_GT(detail::sgd_hyper(g, c, 1.0, 2)[0].lr, 0.0f);  // epochs 0, 1, 2 train
  auto late = detail::sgd_hyper(g, c, 1.0, 3);
  EXPECT_EQ(late[0].lr, 0.0f);
  EXPECT_EQ(late[0].weight_decay, 0.0f);
  EXPECT_GT(late[6].lr, 0.0f);  // other layers go on
}

TEST(Recipe, LookaheadArithmetic) {
  Graph g = two_groups();
  auto ex = detail::make_cpu_executor(g, 2, 1);
  std::vector<float> w(static_cast<std::size_t>(g.params()[6].elements), 1.0f), zero(w.size(), 0.0f), got(w.size()), ema(w.size());
  ex->write_param(6, zero);
  ex->lookahead_init();  // ema = 0
  ex->write_param(6, w);  // net = 1
  ex->lookahead(0.25f);   // ema = lerp(0, 1, 0.75) = 0.75; net = ema
  ex->read_param(6, got);
  ex->read_ema(6, ema);
  EXPECT_FLOAT_EQ(got[0], 0.75f);
  EXPECT_FLOAT_EQ(ema[0], 0.75f);
  ex->write_param(6, w);
  ex->lookahead(1.0f);  // the final average: ema stays, net <- ema
  ex->read_param(6, got);
  EXPECT_FLOAT_EQ(got[0], 0.75f);
  // The decay schedule: 0.95^5 (step / total)^3.
  Lookahead l;
  EXPECT_NEAR(l.strength, std::pow(0.95, 5), 1e-9);
}

TEST(Recipe, DiracInitPassesChannelsThrough) {
  GraphBuilder b("d", Shape::chw(4, 6, 6), 10);
  b.add(layers::conv(6, 3).pad(1).bias(false).init(Attrs::Init::dirac).named("c")).add(layers::flatten()).add(layers::linear(10));
  Graph g = b.build();
  auto ex = detail::make_cpu_executor(g, 1, 1);
  detail::init_params(*ex, 3);
  std::vector<float> w(static_cast<std::size_t>(g.params()[0].elements));
  ex->read_param(0, w);
  for (int k = 0; k < 4; ++k)
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < 9; ++i) EXPECT_EQ(w[static_cast<std::size_t>((k * 4 + c) * 9 + i)], (k == c && i == 4) ? 1.0f : 0.0f);
  bool other = false;  // filters 4 and 5 keep their random init
  for (int i = 4 * 36; i < 6 * 36; ++i) other = other || w[static_cast<std::size_t>(i)] != 0.0f;
  EXPECT_TRUE(other);
}

TEST(Recipe, SymmetricEigenOfAKnownMatrix) {
  // [[2, 1], [1, 2]]: eigenvalues 3 and 1, eigenvectors (1, 1)/sqrt2 and (1, -1)/sqrt2.
  std::vector<double> values, vectors;
  detail::symmetric_eigen({2, 1, 1, 2}, 2, values, vectors);
  EXPECT_NEAR(values[0], 3.0, 1e-12);
  EXPECT_NEAR(values[1], 1.0, 1e-12);
  EXPECT_NEAR(std::fabs(vectors[0]), std::sqrt(0.5), 1e-12);
  EXPECT_NEAR(vectors[0] * vectors[1], 0.5, 1e-12);
  EXPECT_NEAR(vectors[2] * vectors[3], -0.5, 1e-12);
}

TEST(Recipe, WhiteningFiltersWhitenThePatches) {
  Cifar10 data = make_synthetic_cifar10({300, 5, 2});
  detail::InputTransform t;
  t.mean = {0.4914f, 0.4822f, 0.4465f};
  t.inv_std = {1 / 0.2470f, 1 / 0.2435f, 1 / 0.2616f};
  const std::int64_t images = 200;
  auto f = detail::whitening_filters(data.train, t, 2, 2, images, 5e-4);
  ASSERT_EQ(f.size(), 24u * 12u);
  // The second moment of all 2x2 patches, computed here directly in double.
  const int n = 12;
  std::vector<double> cov(n * n, 0.0);
  std::int64_t count = 0;
  for (std::int64_t i = 0; i < images; ++i)
    for (int y = 0; y < 31; ++y)
      for (int x = 0; x < 31; ++x) {
        double p[n];
        int k = 0;
        for (int c = 0; c < 3; ++c)
          for (int dy = 0; dy < 2; ++dy)
            for (int dx = 0; dx < 2; ++dx)
              p[k++] = (data.train.image(i)[(c * 32 + y + dy) * 32 + x + dx] / 255.0 - t.mean[static_cast<std::size_t>(c)]) *
                       t.inv_std[static_cast<std::size_t>(c)];
        for (int r = 0; r < n; ++r)
          for (int s = 0; s < n; ++s) cov[r * n + s] += p[r] * p[s];
        ++count;
      }
  for (auto& v : cov) v /= static_cast<double>(count);
  // Filters F (first 12): F cov F^T = diag(lambda_i / (lambda_i + eps)), near the identity.
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b) {
      double m = 0;
      for (int r = 0; r < n; ++r)
        for (int s = 0; s < n; ++s) m += f[static_cast<std::size_t>(a * n + r)] * cov[r * n + s] * f[static_cast<std::size_t>(b * n + s)];
      if (a == b) {
        EXPECT_GT(m, 0.5) << a;
        EXPECT_LT(m, 1.0 + 1e-4) << a;
      } else {
        EXPECT_NEAR(m, 0.0, 1e-3) << a << "," << b;
      }
    }
  for (std::size_t i = 0; i < 12u * 12u; ++i) EXPECT_EQ(f[12 * 12 + i], -f[i]);  // and their negatives
  // Eigenvalues descend: the first filter has the smallest norm (largest lambda).
  auto norm = [&](int r) {
    double s = 0;
    for (int k = 0; k < n; ++k) s += f[static_cast<std::size_t>(r * n + k)] * f[static_cast<std::size_t>(r * n + k)];
    return s;
  };
  EXPECT_LT(norm(0), norm(11));
}

TEST(Recipe, AlternatingFlipOverTwoEpochs) {
  Cifar10 data = make_synthetic_cifar10({200, 5, 1});
  detail::LoaderOptions o;
  o.batch = 50;
  o.seed = 9;
  o.augment.enabled = true;
  o.augment.pad = math::PadMode::reflect;
  o.augment.max_shift = 2;
  o.augment.alternate_flip = true;
  detail::Loader loader(data.train, o);
  auto order0 = loader.epoch_order(0), order1 = loader.epoch_order(1);
  std::vector<int> flip0(200), flip1(200);
  for (std::int64_t p = 0; p < 200; ++p) {
    flip0[static_cast<std::size_t>(order0[static_cast<std::size_t>(p)])] = loader.augment_for(0, p).flip;
    flip1[static_cast<std::size_t>(order1[static_cast<std::size_t>(p)])] = loader.augment_for(1, p).flip;
  }
  int flipped = 0;
  for (int r = 0; r < 200; ++r) {
    EXPECT_EQ(flip1[static_cast<std::size_t>(r)], 1 - flip0[static_cast<std::size_t>(r)]) << "record " << r;
    flipped += flip0[static_cast<std::size_t>(r)];
  }
  EXPECT_GT(flipped, 70);
  EXPECT_LT(flipped, 130);
}

TEST(Recipe, TestTimeAugmentationViewsAndWeights) {
  auto views = detail::tta_views(true);
  ASSERT_EQ(views.size(), 6u);
  double total = 0;
  for (const auto& v : views) total += v.weight;
  EXPECT_DOUBLE_EQ(total, 1.0);
  EXPECT_EQ(views[0].weight + views[1].weight, 0.5);  // the image and its mirror
  EXPECT_EQ(views[2].params.dy, -1);
  EXPECT_EQ(views[4].params.dx, 1);
  EXPECT_EQ(views[5].params.flip, 1);
  // Against a direct computation through the executor.
  Graph g = two_groups();
  auto ex = detail::make_cpu_executor(g, 16, 1);
  detail::init_params(*ex, 5);
  Cifar10 data = make_synthetic_cifar10({5, 40, 3});
  GraphBuilder b("t", Shape::chw(3, 32, 32), 10);
  b.add(layers::conv(4, 3).pad(1).named("c")).add(layers::maxpool(4)).add(layers::flatten()).add(layers::linear(10).named("fc"));
  Graph g32 = b.build();
  auto ex32 = detail::make_cpu_executor(g32, 16, 1);
  detail::init_params(*ex32, 5);
  TrainConfig c;
  c.tta = true;
  detail::PlanSpec spec;
  spec.batch = 16;
  spec.execution.threads = 1;
  spec.input = {c.mean, c.std};
  spec.seed = 5;
  Evaluation e = detail::evaluate(*detail::compile_plan(g32, spec), data.test, {.tta = c.tta});
  detail::InputTransform t;
  t.pad = math::PadMode::reflect;
  t.mean = c.mean;
  for (float s : c.std) t.inv_std.push_back(1 / s);
  std::int64_t correct = 0;
  for (std::int64_t i = 0; i < data.test.size(); ++i) {
    std::vector<double> sum(10, 0.0);
    for (const auto& v : views) {
      std::vector<float> logits(10);
      detail::HostBatch hb{1, data.test.image(i), &data.test.labels[static_cast<std::size_t>(i)], &v.params};
      ex32->stage(hb, t);
      ex32->forward(false, 0);
      ex32->read_logits(logits);
      for (int k = 0; k < 10; ++k) sum[static_cast<std::size_t>(k)] += v.weight * logits[static_cast<std::size_t>(k)];
    }
    correct += (std::max_element(sum.begin(), sum.end()) - sum.begin()) == data.test.labels[static_cast<std::size_t>(i)];
  }
  EXPECT_EQ(e.count, 40);
  EXPECT_NEAR(e.accuracy, static_cast<double>(correct) / 40.0, 1e-12);
}

TEST(Recipe, AirbenchSpecCarriesTheRecipe) {
  Spec s = load_spec(repo_path("data/models/airbench.yaml"));
  const TrainConfig& t = s.train;
  EXPECT_DOUBLE_EQ(t.epochs, 9.9);
  EXPECT_EQ(t.batch, 1024);
  EXPECT_TRUE(t.drop_last);
  EXPECT_NEAR(t.lr, 11.5 / (1024 * (1 + 1 / 0.15)), 1e-15);
  EXPECT_NEAR(t.weight_decay, 0.0153 * 1024 / (1024 * (1 + 1 / 0.15)), 1e-15);
  EXPECT_EQ(t.decay_mode, DecayMode::lr_independent);
  EXPECT_TRUE(t.nesterov);
  EXPECT_DOUBLE_EQ(t.momentum, 0.85);
  EXPECT_TRUE(t.sum_loss);
  EXPECT_DOUBLE_EQ(t.label_smoothing, 0.2);
  EXPECT_EQ(t.schedule.kind, Schedule::Kind::linear);
  EXPECT_DOUBLE_EQ(t.schedule.warmup, 0.23);
  EXPECT_EQ(t.lookahead.every, 5);
  EXPECT_NEAR(t.lookahead.strength, std::pow(0.95, 5), 1e-15);
  EXPECT_EQ(t.augment.translate, 2);
  EXPECT_TRUE(t.augment.alternate_flip);
  EXPECT_TRUE(t.tta);
  EXPECT_EQ(t.whiten_images, 5000);
  const Layer& whiten = *s.graph.find("whiten");
  EXPECT_EQ(whiten.attrs.init, Attrs::Init::whiten);
  EXPECT_FALSE(s.graph.params()[static_cast<std::size_t>(whiten.params[0])].trainable);  // frozen filters
  EXPECT_TRUE(s.graph.params()[static_cast<std::size_t>(whiten.params[1])].trainable);   // a bias that trains 3 epochs
  EXPECT_DOUBLE_EQ(*whiten.attrs.train_epochs, 3.0);
  EXPECT_DOUBLE_EQ(s.graph.find("g2_bn1")->attrs.lr_scale, 64.0);
  EXPECT_EQ(s.graph.find("g3_conv2")->attrs.init, Attrs::Init::dirac);
}

TEST(Recipe, InitKeysAreChecked) {
  const std::string head = "name: t\ninput: [3, 32, 32]\nclasses: 10\nlayers:\n";
  auto d = only_error(head + "  - {name: w, op: conv, out: 32, kernel: 2, init: whiten}\n  - {op: flatten}\n  - {op: linear, out: 10}\n");
  EXPECT_EQ(d.message, "init: whiten needs out = 2 x in x kh x kw = 24 (each eigenvector of the 12-value patch covariance and its "
                       "negative) and groups 1, got out: 32, groups: 1");
  auto d2 = only_error(head + "  - {op: relu}\n  - {name: w, op: conv, out: 24, kernel: 2, init: whiten}\n  - {op: flatten}\n"
                              "  - {op: linear, out: 10}\n");
  EXPECT_TRUE(contains(d2.message, "its input is 'relu1', not the model input")) << d2.message;
  auto d3 = only_error(head + "  - {name: w, op: conv, out: 8, kernel: 3, init: lecun}\n  - {op: flatten}\n  - {op: linear, out: 10}\n");
  EXPECT_EQ(d3.message, "'init' must be one of default, dirac, whiten, got 'lecun'");
  auto d4 = only_error(head + "  - {op: flatten}\n  - {op: linear, out: 10, train_epochs: 0}\n");
  EXPECT_EQ(d4.message, "train_epochs must be positive, got 0");
}

// When fit() evaluates: after every epoch, once at the end, or never (airbench evaluates once).
TEST(Recipe, EvaluationPolicy) {
  GraphBuilder b("e", Shape::chw(3, 8, 8), 10);
  b.add(layers::flatten()).add(layers::linear(10).named("fc"));
  const Graph g = b.build();
  Cifar10 data = make_synthetic_cifar10({.train = 96, .test = 32, .seed = 3});
  data.train.images.resize(static_cast<std::size_t>(96 * 3 * 8 * 8));
  data.test.images.resize(static_cast<std::size_t>(32 * 3 * 8 * 8));
  data.train.sample = data.test.sample = Shape::chw(3, 8, 8);
  TrainConfig c;
  c.epochs = 3;
  c.batch = 32;
  for (EvalPolicy policy : {EvalPolicy::every_epoch, EvalPolicy::at_end, EvalPolicy::never}) {
    RunOptions run;
    run.threads = 1;
    run.evaluate = policy;
    Trainer t(g, c, run);
    std::vector<bool> evaluated;
    t.on_epoch([&](const EpochEvent& e) { evaluated.push_back(e.test_accuracy.has_value()); });
    const TrainResult r = t.fit(data);
    ASSERT_EQ(evaluated.size(), 3u);
    const std::vector<bool> expected = policy == EvalPolicy::every_epoch ? std::vector<bool>{true, true, true}
                                       : policy == EvalPolicy::at_end    ? std::vector<bool>{false, false, true}
                                                                         : std::vector<bool>{false, false, false};
    EXPECT_EQ(evaluated, expected) << static_cast<int>(policy);
    EXPECT_EQ(r.test_accuracy.has_value(), policy != EvalPolicy::never);
  }
}

}  // namespace
}  // namespace kiln::test
