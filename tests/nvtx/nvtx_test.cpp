// The NVTX ranges a short CPU training run emits, recorded by an injection library as
// Nsight Systems would see them: names in the `kiln` domain and their nesting.
#include <gtest/gtest.h>

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

  std::map<std::string, int> top, in_eval;
  for (const auto& r : ranges) {
    if (r.parents.empty()) ++top[r.name];
    else if (r.parents.front() == "evaluate") ++in_eval[r.name];
  }
  // Two training steps (64 images, batch 32): every layer forward and backward once each.
  for (const char* layer : {"conv1", "pool1", "relu1", "conv2", "pool3", "ip1", "ip2"}) {
    EXPECT_EQ(top[std::string(layer) + "/fwd"], 2) << layer;
    EXPECT_EQ(top[std::string(layer) + "/bwd"], 2) << layer;
    EXPECT_EQ(in_eval[std::string(layer) + "/fwd"], 1) << layer;  // 32 test images: one batch
    EXPECT_EQ(in_eval[std::string(layer) + "/bwd"], 0) << layer;
  }
  EXPECT_EQ(top["conv1/bwd"], 2);
  EXPECT_EQ(top["optimizer"], 2);
  EXPECT_EQ(top["loss"], 2);
  EXPECT_EQ(top["data/stage"], 2);
  EXPECT_GE(top["data/fetch"], 2);
  EXPECT_EQ(top["evaluate"], 1);
  EXPECT_EQ(in_eval["data/stage"], 1);
  // No backward range for the input, which needs no gradient.
  EXPECT_EQ(top["input/bwd"], 0);
  fs::remove_all(dir);
}

}  // namespace
