// The NVTX ranges a short CPU training run emits, recorded by an injection library as
// Nsight Systems would see them: names in the `kiln` domain and their nesting.
#include <gtest/gtest.h>

#include <algorithm>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct Range {
  std::string name;
  std::vector<std::string> parents;  // enclosing ranges, outermost first
};

TEST(NvtxRanges, TrainingRunEmitsLayerRangesInTheKilnDomain) {
  fs::path dir = fs::temp_directory_path() / ("kiln_nvtx_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string log = (dir / "nvtx.log").string();
  std::string cmd = std::string(KILN_BIN) + " synth --out " + (dir / "data").string() + " --train 64 --test 32 >/dev/null && " +
                    "NVTX_INJECTION64_PATH=" + KILN_NVTX_INJECT + " KILN_NVTX_LOG=" + log + " " + KILN_BIN + " train " +
                    KILN_SOURCE_DIR + "/data/models/cifar_quick.yaml --data " + (dir / "data").string() +
                    " --batch 32 --epochs 1 --threads 1 --device cpu --out " + (dir / "run").string() + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  std::ifstream in(log);
  ASSERT_TRUE(in) << "the injection library wrote no log: " << log;
  std::vector<std::string> stack;
  std::vector<Range> ranges;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string what, domain, name;
    words >> what >> domain;
    std::getline(words >> std::ws, name);
    EXPECT_EQ(domain, "kiln") << line;
    if (what == "push") {
      ranges.push_back({name, stack});
      stack.push_back(name);
    } else {
      ASSERT_FALSE(stack.empty()) << "a pop without a push";
      stack.pop_back();
    }
  }
  EXPECT_TRUE(stack.empty()) << "unbalanced: " << stack.size() << " ranges left open";

  // Where each range sits: at the top, directly in an epoch, in a training step, in evaluation.
  std::map<std::string, int> top, in_epoch, in_step, in_eval;
  for (const auto& r : ranges) {
    if (r.parents.empty()) ++top[r.name];
    else if (r.parents.back() == "epoch") ++in_epoch[r.name];
    else if (r.parents.back() == "step") ++in_step[r.name];
    if (std::find(r.parents.begin(), r.parents.end(), "evaluate") != r.parents.end()) ++in_eval[r.name];
  }
  // One epoch of two training steps (64 images, batch 32), then its evaluation.
  EXPECT_EQ(top["epoch"], 1);
  EXPECT_EQ(in_epoch["step"], 2);
  EXPECT_EQ(in_epoch["evaluate"], 1);
  EXPECT_GE(in_epoch["data/fetch"], 2);
  // Every layer forward and backward once per step.
  for (const char* layer : {"conv1", "pool1", "relu1", "conv2", "pool3", "ip1", "ip2"}) {
    EXPECT_EQ(in_step[std::string(layer) + "/fwd"], 2) << layer;
    EXPECT_EQ(in_step[std::string(layer) + "/bwd"], 2) << layer;
    EXPECT_EQ(in_eval[std::string(layer) + "/fwd"], 1) << layer;  // 32 test images: one batch
    EXPECT_EQ(in_eval[std::string(layer) + "/bwd"], 0) << layer;
  }
  EXPECT_EQ(in_step["optimizer"], 2);
  EXPECT_EQ(in_step["loss"], 2);
  EXPECT_EQ(in_step["data/stage"], 2);
  EXPECT_EQ(in_eval["data/stage"], 1);
  // No backward range for the input, which needs no gradient.
  EXPECT_EQ(in_step["input/bwd"], 0);
  fs::remove_all(dir);
}

}  // namespace
