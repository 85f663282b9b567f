// llm.c's expected_losses: a short fixed-seed training run on the CPU whose loss at every
// step is pinned, so that any silent numerical change fails here. cifar_quick on a
// synthetic set with the full machinery: shuffling, crop+flip augmentation, momentum,
// weight decay, label smoothing. Tolerance 1e-4: a GEMM kernel with another summation order
// (another CPU, another thread count) moves the losses by ~1e-6; a bug moves them by more.
// When a deliberate change moves them, update the numbers with the values this test prints.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "kiln/kiln.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

TEST(ExpectedLosses, CifarQuickFirstSteps) {
  Cifar10 data = make_synthetic_cifar10({1024, 64, 0});
  data.train.source = data.test.source = "synthetic";
  Spec spec = load_spec(repo_path("data/models/cifar_quick.yaml"));
  TrainConfig c = spec.train;
  c.batch = 64;
  c.seed = 1;
  c.label_smoothing = 0.1;
  c.augment = Augment{4, 0, true};
  RunOptions run;
  run.threads = 2;
  run.max_steps = 10;
  run.evaluate = kiln::EvalPolicy::never;
  Trainer t(spec.graph, c, run);
  std::vector<double> losses;
  t.on_step([&](const StepEvent& e) { losses.push_back(e.loss); });
  t.fit(data);
  const std::vector<double> expected = {2.313516, 2.307621, 2.301717, 2.308635, 2.298507,
                                        2.308489, 2.303882, 2.297186, 2.312517, 2.290099};
  std::string got;
  for (double l : losses) got += fmt::format("{:.6f}, ", l);
  ASSERT_EQ(losses.size(), expected.size()) << got;
  for (std::size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(losses[i], expected[i], 1e-4) << "step " << i + 1 << "; got " << got;
}

}  // namespace
}  // namespace kiln::test
