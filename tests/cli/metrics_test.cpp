// OUT/metrics.jsonl and what the terminal says agree: every record has a type, epochs count
// from 1 everywhere, the epoch records carry the test loss and are exactly what --json prints;
// best.safetensors holds the weights of the epoch with the best test accuracy, across a resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "run.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // keeps the order of the keys as written

const std::string kTiny = src("tests/fuzz/tiny.yaml");

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<json> records(const std::string& path) {
  std::vector<json> out;
  for (const std::string& line : lines_of(slurp(path))) out.push_back(json::parse(line));
  return out;
}

std::vector<json> of_type(const std::vector<json>& all, const std::string& type) {
  std::vector<json> out;
  for (const json& j : all)
    if (j.at("type") == type) out.push_back(j);
  return out;
}

// The start of the terminal's summary line of an epoch record, of a run of `epochs`.
std::string fmt_epoch(const json& j, int epochs) {
  return fmt::format("epoch {}/{}  train loss {:.4f}", j.at("epoch").get<int>(), epochs, j.at("train_loss").get<double>());
}

struct Metrics : ::testing::Test {
  Scratch s{"metrics"};
  std::string data;
  void SetUp() override {
    data = s / "data";
    ASSERT_EQ(run_kiln("synth --out " + data + " --train 64 --test 16").code, 0);
  }
  // 64 images in batches of 16: 4 steps an epoch.
  CliRun train(const std::string& out, const std::string& flags) {
    CliRun r = run_kiln("train " + kTiny + " --data " + data + " --batch 16 --threads 1 --out " + out + " " + flags);
    EXPECT_EQ(r.code, 0) << r.err;
    return r;
  }
};

TEST_F(Metrics, RecordsCountEpochsFromOneAndJsonPrintsTheEpochRecords) {
  const std::string out = s / "run";
  CliRun r = train(out, "--epochs 2 --json");
  const std::vector<json> all = records(out + "/metrics.jsonl");
  ASSERT_EQ(all.size(), 10u);
  for (const json& j : all) ASSERT_TRUE(j.contains("type")) << j.dump();
  const std::vector<json> steps = of_type(all, "step"), epochs = of_type(all, "epoch");
  ASSERT_EQ(steps.size(), 8u);
  ASSERT_EQ(epochs.size(), 2u);
  for (std::size_t i = 0; i < steps.size(); ++i) {
    EXPECT_EQ(steps[i].at("step"), i + 1);
    EXPECT_EQ(steps[i].at("epoch"), i < 4 ? 1 : 2) << "step " << i + 1 << " is in epoch " << (i < 4 ? 1 : 2);
    std::vector<std::string> keys;
    for (const auto& [key, value] : steps[i].items()) keys.push_back(key);
    EXPECT_EQ(keys, (std::vector<std::string>{"type", "step", "epoch", "loss", "lr"}));
  }
  // Records in file order: each epoch's after its last step.
  EXPECT_EQ(all[4].at("type"), "epoch");
  for (int e = 0; e < 2; ++e) {
    const json& j = epochs[static_cast<std::size_t>(e)];
    EXPECT_EQ(j.at("epoch"), e + 1);
    EXPECT_EQ(j.at("step"), 4 * (e + 1));
    std::vector<std::string> keys;
    for (const auto& [key, value] : j.items()) keys.push_back(key);
    EXPECT_EQ(keys, (std::vector<std::string>{"type", "step", "epoch", "train_loss", "train_accuracy", "test_loss",
                                              "test_accuracy", "val_loss", "val_accuracy", "lr", "images_per_sec", "train_seconds", "elapsed"}));
    ASSERT_TRUE(j.at("test_loss").is_number()) << j.dump();
    EXPECT_GT(j.at("test_loss").get<double>(), 0.1);  // cross-entropy of an untrained 10-class model: about ln 10
    EXPECT_LT(j.at("test_loss").get<double>(), 10.0);
    ASSERT_TRUE(j.at("test_accuracy").is_number()) << j.dump();
    EXPECT_GT(j.at("train_seconds").get<double>(), 0.0);
    EXPECT_GE(j.at("elapsed").get<double>(), j.at("train_seconds").get<double>());
  }
  // --json prints the epoch records, byte for byte.
  std::vector<std::string> epoch_lines;
  for (const std::string& line : lines_of(slurp(out + "/metrics.jsonl")))
    if (json::parse(line).at("type") == "epoch") epoch_lines.push_back(line);
  EXPECT_EQ(lines_of(r.out), epoch_lines) << r.out;
}

// --tf32 and --nondeterministic exist in every build; on the CPU they have nothing to act on:
// accepted, not in the header, and the run is the same step for step.
TEST_F(Metrics, CudaNumericsFlagsAreAcceptedAndInertOnTheCpu) {
  const CliRun plain = train(s / "plain", "--epochs 1 --device cpu");
  const CliRun flagged = train(s / "flagged", "--epochs 1 --device cpu --tf32 --nondeterministic");
  EXPECT_TRUE(has(flagged.out, "device cpu\n")) << flagged.out;
  EXPECT_FALSE(has(flagged.out, "tf32")) << flagged.out;
  const std::vector<json> a = of_type(records(s / "plain/metrics.jsonl"), "step");
  const std::vector<json> b = of_type(records(s / "flagged/metrics.jsonl"), "step");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), a.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].at("loss"), b[i].at("loss")) << "step " << i + 1;
  const CliRun bench = run_kiln("bench " + kTiny + " --device cpu --batch 8 --threads 1 --repeats 1 --steps 1 --tf32 --nondeterministic");
  EXPECT_EQ(bench.code, 0) << bench.err;
  const CliRun help = run_kiln("train --help");
  EXPECT_TRUE(has(help.out, "--tf32") && has(help.out, "--nondeterministic")) << help.out;
  EXPECT_TRUE(has(help.out, "without effect on the CPU")) << help.out;
}

TEST_F(Metrics, TheTerminalCountsTheSameEpochs) {
  const std::string out = s / "run";
  CliRun r = train(out, "--epochs 2");
  const std::vector<json> epochs = of_type(records(out + "/metrics.jsonl"), "epoch");
  ASSERT_EQ(epochs.size(), 2u);
  for (const json& j : epochs) {
    const std::string line = fmt_epoch(j, 2);
    EXPECT_TRUE(has(r.out, line)) << "no '" << line << "' in\n" << r.out;
  }
  EXPECT_FALSE(has(r.out, "epoch 0/")) << r.out;
}

TEST_F(Metrics, TestFieldsAreNullWhereTheTestSetWasNotEvaluated) {
  const std::string end = s / "end", none = s / "none";
  train(end, "--epochs 2 --eval end");
  train(none, "--epochs 2 --eval none");
  const std::vector<json> at_end = of_type(records(end + "/metrics.jsonl"), "epoch");
  ASSERT_EQ(at_end.size(), 2u);
  EXPECT_TRUE(at_end[0].at("test_loss").is_null() && at_end[0].at("test_accuracy").is_null()) << at_end[0].dump();
  EXPECT_TRUE(at_end[1].at("test_loss").is_number() && at_end[1].at("test_accuracy").is_number()) << at_end[1].dump();
  for (const json& j : of_type(records(none + "/metrics.jsonl"), "epoch"))
    EXPECT_TRUE(j.at("test_loss").is_null() && j.at("test_accuracy").is_null()) << j.dump();
  // best.safetensors only where every epoch is evaluated.
  EXPECT_FALSE(fs::exists(end + "/best.safetensors"));
  EXPECT_FALSE(fs::exists(none + "/best.safetensors"));
}

// The first epoch of the best test accuracy, from 1.
int best_epoch(const std::vector<json>& epochs) {
  int best = 0;
  double accuracy = -1;
  for (const json& j : epochs)
    if (j.at("test_accuracy").get<double>() > accuracy) accuracy = j.at("test_accuracy").get<double>(), best = j.at("epoch").get<int>();
  return best;
}

TEST_F(Metrics, BestHoldsTheWeightsOfTheBestEpoch) {
  const std::string whole = s / "whole";
  train(whole, "--epochs 4 --lr 0.05");
  const std::vector<json> epochs = of_type(records(whole + "/metrics.jsonl"), "epoch");
  ASSERT_EQ(epochs.size(), 4u);
  const int best = best_epoch(epochs);
  ASSERT_GE(best, 1);
  // The same run stopped at the end of that epoch ends with those weights (the schedule spans
  // the whole run either way).
  const std::string stopped = s / "stopped";
  train(stopped, "--epochs 4 --lr 0.05 --steps " + std::to_string(4 * best));
  const std::string weights = slurp(stopped + "/model.safetensors");
  ASSERT_FALSE(weights.empty());
  EXPECT_TRUE(slurp(whole + "/best.safetensors") == weights) << "best.safetensors is not epoch " << best << "'s weights";

  // Resumed after each epoch: the same metrics (times aside) and the same best.
  const std::string resumed = s / "resumed";
  train(resumed, "--epochs 4 --lr 0.05 --steps 4");
  for (int k = 0; k < 3; ++k) train(resumed, "--epochs 4 --lr 0.05 --steps 4 --resume " + resumed);
  auto untimed = [](std::vector<json> all) {
    for (json& j : all)
      for (const char* key : {"images_per_sec", "train_seconds", "elapsed"}) j.erase(key);
    return all;
  };
  EXPECT_EQ(untimed(records(resumed + "/metrics.jsonl")), untimed(records(whole + "/metrics.jsonl")));
  EXPECT_TRUE(slurp(resumed + "/best.safetensors") == slurp(whole + "/best.safetensors"))
      << "the resumed run's best.safetensors differs (best epoch " << best << ")";
}

}  // namespace
}  // namespace kiln::test
