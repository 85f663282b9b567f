// A layer whose output nothing consumes (a probe left in while experimenting) must not
// change training: the model trains exactly as the same model without it, and the probe's
// parameters keep their values, as PyTorch leaves a parameter whose .grad is None alone.
// Once, the probe's zero-filled gradient shared bytes with live buffers and moved the
// other weights by ~1%. (PyTorch itself: tests/python/unused_branch_vs_torch.py.)
#include <filesystem>
#include <unistd.h>

#include "kiln/kiln.hpp"
#include "test_models.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

struct Scratch {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("kiln-unused-" + std::to_string(::getpid()));
  Scratch() { std::filesystem::create_directories(dir); }
  ~Scratch() { std::filesystem::remove_all(dir); }
  std::string file(const char* name) const { return (dir / name).string(); }
};

TEST(UnusedBranch, TrainsExactlyLikeTheModelWithoutIt) {
  Scratch scratch;
  Cifar10 data = make_synthetic_cifar10({160, 16, 5});
  TrainConfig c;
  c.batch = 32;
  c.epochs = 1;
  c.lr = 0.05;
  c.momentum = 0.9;
  c.weight_decay = 5e-3;  // with decay too: the probe gets no optimizer step at all
  c.shuffle = false;
  RunOptions run;
  run.threads = 2;
  run.evaluate = EvalPolicy::never;

  // The probe model's initial weights, and the same without the probe's tensors.
  const std::string with_init = scratch.file("with.safetensors"), without_init = scratch.file("without.safetensors");
  Trainer(probe_model(true), c, run).save_weights(with_init);
  SafetensorsFile all = read_safetensors(with_init), kept;
  for (const NamedTensor& t : all.tensors)
    if (t.name.rfind("probe", 0) != 0) kept.tensors.push_back(t);
  write_safetensors(without_init, kept);

  RunOptions a = run, b = run;
  a.init = with_init;
  b.init = without_init;
  Trainer with(probe_model(true), c, a), without(probe_model(false), c, b);
  std::vector<double> loss_with, loss_without;
  with.on_step([&](const StepEvent& e) { loss_with.push_back(e.loss); });
  without.on_step([&](const StepEvent& e) { loss_without.push_back(e.loss); });
  EXPECT_EQ(with.fit(data).steps, 5);
  EXPECT_EQ(without.fit(data).steps, 5);
  EXPECT_EQ(loss_with, loss_without);

  with.save_weights(scratch.file("with_after.safetensors"));
  without.save_weights(scratch.file("without_after.safetensors"));
  SafetensorsFile after_with = read_safetensors(scratch.file("with_after.safetensors"));
  SafetensorsFile after_without = read_safetensors(scratch.file("without_after.safetensors"));
  for (const NamedTensor& t : after_without.tensors) {
    const NamedTensor* other = after_with.find(t.name);
    ASSERT_NE(other, nullptr) << t.name;
    EXPECT_EQ(other->f32, t.f32) << t.name << " differs between the model with the probe and without it";
    const NamedTensor* before = all.find(t.name);
    if (t.name != "bn1.num_batches_tracked") {
      EXPECT_NE(before->f32, t.f32) << t.name << " did not train";
    }
  }
  for (const char* name : {"probe.weight", "probe.bias", "probe_bn.weight", "probe_bn.bias"})
    EXPECT_EQ(after_with.find(name)->f32, all.find(name)->f32) << name << " changed: an unused layer gets no update";
  // Its forward runs (in training mode), so its running statistics move, as in PyTorch.
  EXPECT_NE(after_with.find("probe_bn.running_mean")->f32, all.find("probe_bn.running_mean")->f32);
}

}  // namespace
}  // namespace kiln::test
