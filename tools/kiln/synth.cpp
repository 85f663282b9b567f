// kiln synth: writes a synthetic set in a dataset format's layout (CIFAR-10's by default).
#include <fmt/format.h>

#include "cli.hpp"
#include "util/text.hpp"

namespace kiln::cli {

namespace {

struct SynthCliOptions {
  std::string out;
  std::string format = "cifar10";
  std::int64_t train = 50000;
  std::int64_t test = 10000;
  std::uint64_t seed = 0;
};

DataFormat parse_format_option(const std::string& name) {
  DataFormat format{};
  if (parse_format(name, format)) return format;
  const std::vector<std::string_view> names = {"cifar10", "cifar100", "mnist", "fashion-mnist"};
  const std::string guess = detail::closest(name, names);
  throw UsageError(fmt::format("--format: unknown format '{}'{}; the formats are {}", name,
                               guess.empty() ? "" : fmt::format(" (did you mean '{}'?)", guess), fmt::join(names, ", ")));
}

int run_synth(const SynthCliOptions& o) {
  const DataFormat format = parse_format_option(o.format);
  // CIFAR-10 has five training files and a test file, none of which may be empty; the other
  // formats one file (or pair) per split.
  const std::int64_t min_train = format == DataFormat::cifar10 ? 5 : 1;
  if (o.train < min_train)
    throw UsageError(format == DataFormat::cifar10
                         ? fmt::format("--train must be at least 5 (one image per data_batch file), got {}", o.train)
                         : fmt::format("--train must be at least 1, got {}", o.train));
  if (o.test < 1) throw UsageError(fmt::format("--test must be at least 1, got {}", o.test));
  SynthOptions options;
  options.train = o.train;
  options.test = o.test;
  options.seed = o.seed;
  options.format = format;
  Splits data = make_synthetic(options);
  write_data(data, o.out);
  fmt::print("wrote {} train and {} test images (seed {}) to {}{}\n", data.train.size(), data.test.size(), o.seed, o.out,
             format == DataFormat::cifar10 ? "" : fmt::format(" ({} layout)", format_name(format)));
  return 0;
}

}  // namespace

void add_synth(CLI::App& root, std::vector<Command>& commands) {
  auto o = std::make_shared<SynthCliOptions>();
  CLI::App* app = root.add_subcommand("synth", "Write a synthetic set in a dataset format (default: CIFAR-10's binary format)");
  app->add_option("--out", o->out, "Output directory")->required();
  app->add_option("--format", o->format, "cifar10, cifar100, mnist or fashion-mnist")->capture_default_str();
  app->add_option("--train", o->train, "Training images")->check(non_negative())->capture_default_str();
  app->add_option("--test", o->test, "Test images")->check(non_negative())->capture_default_str();
  app->add_option("--seed", o->seed, "Seed")->capture_default_str();
  commands.push_back({app, [o] { return run_synth(*o); }});
}

}  // namespace kiln::cli
