// kiln synth: writes a synthetic 10-class set in CIFAR-10's binary format.
#include <fmt/format.h>

#include "cli.hpp"

namespace kiln::cli {

namespace {

struct SynthCliOptions {
  std::string out;
  std::int64_t train = 50000;
  std::int64_t test = 10000;
  std::uint64_t seed = 0;
};

int run_synth(const SynthCliOptions& o) {
  // The format has five training files and a test file, none of which may be empty.
  if (o.train < 5) throw UsageError(fmt::format("--train must be at least 5 (one image per data_batch file), got {}", o.train));
  if (o.test < 1) throw UsageError(fmt::format("--test must be at least 1, got {}", o.test));
  Cifar10 data = make_synthetic_cifar10({o.train, o.test, o.seed});
  write_cifar10(data, o.out);
  fmt::print("wrote {} train and {} test images (seed {}) to {}\n", data.train.size(), data.test.size(), o.seed, o.out);
  return 0;
}

}  // namespace

void add_synth(CLI::App& root, std::vector<Command>& commands) {
  auto o = std::make_shared<SynthCliOptions>();
  CLI::App* app = root.add_subcommand("synth", "Write a synthetic 10-class set in CIFAR-10's binary format");
  app->add_option("--out", o->out, "Output directory")->required();
  app->add_option("--train", o->train, "Training images")->check(non_negative())->capture_default_str();
  app->add_option("--test", o->test, "Test images")->check(non_negative())->capture_default_str();
  app->add_option("--seed", o->seed, "Seed")->capture_default_str();
  commands.push_back({app, [o] { return run_synth(*o); }});
}

}  // namespace kiln::cli
