// A run folder is data: kiln train never trains into a folder that holds a run unless told to
// (--overwrite) or resuming that run, refuses before loading any data, and leaves the old run
// byte for byte; the default --out is the next free runs/<model>/N; --resume DIR alone writes
// into DIR; every run folder says what it is in run.yaml.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "run.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

const std::string kTiny = src("tests/fuzz/tiny.yaml");

std::map<std::string, std::string> files_of(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) files[e.path().filename().string()] = slurp(e.path().string());
  return files;
}

struct Folder : ::testing::Test {
  Scratch s{"run_folder"};
  std::string data;
  void SetUp() override {
    data = s / "data";
    ASSERT_EQ(run_kiln("synth --out " + data + " --train 64 --test 16").code, 0);
  }
  CliRun train(const std::string& flags, const std::string& cwd = "") {
    return run_kiln("train " + kTiny + " --data " + data + " --steps 2 --batch 16 --threads 1 " + flags,
                    cwd.empty() ? "" : "cd " + cwd + " &&");
  }
};

TEST_F(Folder, ASecondRunIntoTheSameFolderIsRefusedAndLeavesTheFirst) {
  const std::string out = s / "run";
  ASSERT_EQ(train("--out " + out).code, 0);
  const auto before = files_of(out);
  ASSERT_EQ(before.size(), 5u);  // run.yaml, metrics.jsonl, model.safetensors, train_state.safetensors, best.safetensors
  // Refused before the data is read: the data directory named here does not exist.
  CliRun again = run_kiln("train " + kTiny + " --data " + (s / "no-such-data") + " --steps 2 --out " + out);
  EXPECT_EQ(again.code, 1) << again.err;
  EXPECT_TRUE(has(again.err, "kiln train: error: " + out + " holds a run (run.yaml, train_state.safetensors, "
                                                          "model.safetensors, metrics.jsonl, best.safetensors)"))
      << again.err;
  EXPECT_TRUE(has(again.err, "hint: continue it with: kiln train --resume " + out)) << again.err;
  EXPECT_TRUE(has(again.err, "--overwrite")) << again.err;
  EXPECT_FALSE(has(again.err, "no-such-data:")) << again.err;
  EXPECT_TRUE(files_of(out) == before) << "the first run's folder changed";
}

TEST_F(Folder, OverwriteReplacesTheRun) {
  const std::string out = s / "run";
  ASSERT_EQ(train("--out " + out).code, 0);
  const std::string first_yaml = slurp(out + "/run.yaml");
  CliRun again = train("--out " + out + " --overwrite --seed 9");
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_TRUE(has(slurp(out + "/run.yaml"), "seed: 9")) << slurp(out + "/run.yaml");
  EXPECT_NE(slurp(out + "/run.yaml"), first_yaml);
}

TEST_F(Folder, TheDefaultOutIsTheNextFreeNumberedFolder) {
  const std::string cwd = s / "work";
  fs::create_directories(cwd);
  ASSERT_EQ(train("", cwd).code, 0);
  CliRun second = train("", cwd);
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_TRUE(has(second.out, "runs/fuzz_tiny/2/model.safetensors")) << second.out;
  EXPECT_TRUE(fs::exists(cwd + "/runs/fuzz_tiny/1/model.safetensors"));
  EXPECT_TRUE(fs::exists(cwd + "/runs/fuzz_tiny/2/model.safetensors"));
}

TEST_F(Folder, ResumeWithoutOutGoesOnInTheRunsFolder) {
  const std::string out = s / "run", cwd = s / "elsewhere";
  fs::create_directories(cwd);
  ASSERT_EQ(train("--out " + out + " --epochs 1").code, 0);
  const std::string yaml = slurp(out + "/run.yaml");
  CliRun resumed = run_kiln("train " + kTiny + " --data " + data + " --batch 16 --threads 1 --resume " + out,
                            "cd " + cwd + " &&");
  EXPECT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_TRUE(has(resumed.out, "weights in " + out + "/model.safetensors")) << resumed.out;
  EXPECT_FALSE(fs::exists(cwd + "/runs")) << "the resumed run wrote into ./runs";
  EXPECT_EQ(slurp(out + "/run.yaml"), yaml) << "a resumed run keeps the run.yaml it started with";
}

TEST_F(Folder, RunYamlSaysWhatRan) {
  const std::string out = s / "run";
  ASSERT_EQ(train("--out " + out + " --lr 0.05 --seed 4").code, 0);
  const std::string yaml = slurp(out + "/run.yaml");
  for (const std::string& line :
       {std::string("kiln: {version: \"") + KILN_VERSION_EXPECTED + "\", commit: \"", std::string("model: {file: \"") + kTiny + "\"",
        std::string("data: {dir: \"") + data + "\"", std::string("\"--lr\", \"0.05\""), std::string("  lr: 0.05\n"),
        std::string("  seed: 4\n"), std::string("  steps: 2\n"), std::string("  batch: 16\n"),
        std::string("device: {backend: cpu, layout: nchw, dtype: fp32, threads: 1, cpu_conv: auto}")})
    EXPECT_TRUE(has(yaml, line)) << "run.yaml lacks '" << line << "':\n" << yaml;
}

}  // namespace
}  // namespace kiln::test

namespace kiln::test {
namespace {

// --resume DIR alone: run.yaml gives the model, data and recipe; the result is the
// uninterrupted run's, bit for bit (the same thread count comes back too).
TEST_F(Folder, ResumeAloneEndsLikeTheUninterruptedRun) {
  const std::string whole = s / "whole", split = s / "split";
  const std::string flags = "train " + kTiny + " --data " + data + " --batch 16 --threads 1 --epochs 2 --lr 0.05 --seed 3 ";
  ASSERT_EQ(run_kiln(flags + "--out " + whole).code, 0);
  // The same run stopped after 5 of its 8 steps (--steps stops it here; Ctrl-C and kill -9: Interrupt.*).
  ASSERT_EQ(run_kiln(flags + "--steps 5 --out " + split).code, 0);
  ASSERT_FALSE(slurp(whole + "/model.safetensors") == slurp(split + "/model.safetensors"));
  CliRun resumed = run_kiln("train --resume " + split, "cd / &&");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_TRUE(has(resumed.out, "training fuzz_tiny")) << resumed.out;
  EXPECT_TRUE(slurp(whole + "/model.safetensors") == slurp(split + "/model.safetensors"))
      << "the resumed run ended on other weights than the uninterrupted one";
}

TEST_F(Folder, AResumeThatContradictsTheRunIsRefusedWithBothValues) {
  const std::string out = s / "run";
  ASSERT_EQ(train("--out " + out + " --lr 0.05").code, 0);
  const auto before = files_of(out);
  CliRun r = run_kiln("train --resume " + out + " --lr 0.1 --batch 8 --seed 9 --data " + (s / "other") + " --layout nhwc");
  EXPECT_EQ(r.code, 2) << r.err;
  for (const std::string& line :
       {"kiln train: error: --resume " + out + ": the run in " + out + "/run.yaml was started otherwise:",
        std::string("    --lr 0.1 (the run's: 0.05)"), std::string("    --batch 8 (the run's: 16)"),
        std::string("    --seed 9 (the run's: 0)"), "    --data " + (s / "other") + " (the run's: " + data + ")",
        std::string("    --layout nhwc (the run's: nchw)"), std::string("only --epochs, --steps, --threads, --device and --eval")})
    EXPECT_TRUE(has(r.err, line)) << "missing '" << line << "' in:\n" << r.err;
  // Another model too.
  CliRun model = run_kiln("train " + src("data/models/cifar_quick.yaml") + " --resume " + out);
  EXPECT_EQ(model.code, 2) << model.err;
  EXPECT_TRUE(has(model.err, "    model " + src("data/models/cifar_quick.yaml") + " (the run's: " + kTiny + ")")) << model.err;
  EXPECT_TRUE(files_of(out) == before) << "a refused resume changed the run's folder";
}

TEST_F(Folder, AResumeOnChangedDataIsRefused) {
  const std::string out = s / "run";
  ASSERT_EQ(train("--out " + out).code, 0);
  { std::ofstream(data + "/test_batch.bin", std::ios::app) << "x"; }
  CliRun r = run_kiln("train --resume " + out);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(has(r.err, "--resume " + out + ": the data in " + data + " changed since the run started")) << r.err;
}

TEST_F(Folder, EpochsMayExtendAResumedRun) {
  const std::string out = s / "run";
  ASSERT_EQ(run_kiln("train " + kTiny + " --data " + data + " --batch 16 --threads 1 --epochs 1 --out " + out).code, 0);
  CliRun r = run_kiln("train --resume " + out + " --epochs 2");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "done: 8 steps")) << r.out;
  EXPECT_TRUE(has(slurp(out + "/run.yaml"), "  epochs: 2\n")) << slurp(out + "/run.yaml");
}

}  // namespace
}  // namespace kiln::test
