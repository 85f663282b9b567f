// Specs with blocks through the CLI: check's expanded and folded tables, a block error's
// two locations, and the zoo's ResNet-18 training a few steps on the CPU.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "run.hpp"

namespace kiln::test {
namespace {

TEST(CliBlocks, CheckExpandsAndFolds) {
  CliRun r = run_kiln("check " + src("data/models/resnet18.yaml"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "layer2.0.shortcut.0  conv       128x16x16       8,192")) << r.out;
  EXPECT_TRUE(has(r.out, "ok: " + src("data/models/resnet18.yaml") + " is valid (68 layers, 11,173,962 parameters)")) << r.out;

  CliRun f = run_kiln("check --fold " + src("data/models/resnet18.yaml"));
  ASSERT_EQ(f.code, 0) << f.err;
  // One row per instance: its block, output, parameters (two 3x3 convs + two BN, plus the shortcut).
  EXPECT_TRUE(has(f.out, "layer2.0  block down   128x16x16     230,144")) << f.out;
  EXPECT_TRUE(has(f.out, "layer4.1  block basic  512x4x4     4,720,640")) << f.out;
  EXPECT_FALSE(has(f.out, "layer2.0.conv1")) << f.out;
  EXPECT_TRUE(has(f.out, "11,173,962")) << f.out;

  CliRun j = run_kiln("check --fold --json " + src("data/models/resnet18.yaml"));
  ASSERT_EQ(j.code, 0) << j.err;
  auto doc = nlohmann::json::parse(j.out);
  EXPECT_EQ(doc["layers"].size(), 69u);  // the layers stay expanded
  bool seen = false;
  for (const auto& l : doc["layers"]) {
    if (l["name"] == "layer2.0.conv1") {  // resolved options: what tools/reference/spec_torch.py rebuilds it from
      EXPECT_EQ(l["attrs"]["stride"], nlohmann::json::array({2, 2}));
      EXPECT_EQ(l["attrs"]["pad"], nlohmann::json::array({1, 1, 1, 1}));
      EXPECT_EQ(l["attrs"]["bias"], false);
    }
    if (l["name"] == "layer3.1.bn2") {
      seen = true;
      EXPECT_EQ(l["instance"], "layer3.1");
      EXPECT_EQ(l["block"], "basic");
    }
  }
  EXPECT_TRUE(seen);
  std::int64_t total = 0;
  for (const auto& row : doc["folded"]) total += row["params"].get<std::int64_t>();
  EXPECT_EQ(total, 11'173'962);
  EXPECT_EQ(doc["folded"].size(), 15u);  // input, conv1, bn1, relu, 8 instances, pool, flatten, linear
}

TEST(CliBlocks, ErrorNamesTheInstanceAndBothLines) {
  Scratch s("blocks_error");
  const std::string spec = s / "bad.yaml";
  std::ofstream(spec) << "name: bad\ninput: [3, 32, 32]\nclasses: 10\nblocks:\n  b:\n    params: {k: 3}\n    layers:\n"
             "      - {name: conv, op: conv, out: 8, kernel: \"${k}\"}\nlayers:\n"
             "  - {name: stage, block: b, repeat: 2, k: 33}\n  - {op: flatten}\n  - {op: linear, out: 10}\n";
  CliRun r = run_kiln("check " + spec);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.err, spec + ":8:9: error: layer 'stage.0.conv' (conv 33x33, stride 1, pad 0): kernel 33x33 is larger")) << r.err;
  EXPECT_TRUE(has(r.err, "in 'stage.0', an instance of block 'b' (k: 33) at " + spec + ":10:5")) << r.err;
}

TEST(CliBlocks, ResNet18TrainsOnTheCpu) {
  Scratch s("blocks_train");
  ASSERT_EQ(run_kiln("synth --out " + (s / "data") + " --train 16 --test 8").code, 0);
  CliRun r = run_kiln("train " + src("data/models/resnet18.yaml") + " --data " + (s / "data") +
                      " --steps 2 --batch 4 --threads 2 --eval none --out " + (s / "run"));
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_TRUE(std::filesystem::exists(s / "run/model.safetensors"));
}

}  // namespace
}  // namespace kiln::test
