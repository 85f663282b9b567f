// The CUDA backend's fusion plan (cuda/fusion.hpp), on the host: which batchnorm +
// activation pairs run as one kernel, and which of those end in the convolution cuDNN's
// prologue fusion takes.
#include <gtest/gtest.h>

#include <string>

#include "cuda/fusion.hpp"
#include "kiln/kiln.hpp"

namespace kiln {
namespace {

std::vector<std::string> names(const Graph& g, const cuda::FusionPlan& plan) {
  std::vector<std::string> out;
  for (const auto& group : plan.groups) out.push_back(group.name(g));
  return out;
}

TEST(Fusion, AirbenchGroupsEveryBatchnormWithItsGelu) {
  Graph g = load_spec(std::string(KILN_SOURCE_DIR) + "/data/models/airbench.yaml").graph;
  const cuda::FusionPlan plan = cuda::plan_fusion(g);
  EXPECT_EQ(names(g, plan), (std::vector<std::string>{"g1_bn1+g1_act1 -> g1_conv2", "g1_bn2+g1_act2 -> g2_conv1",
                                                      "g2_bn1+g2_act1 -> g2_conv2", "g2_bn2+g2_act2 -> g3_conv1",
                                                      "g3_bn1+g3_act1 -> g3_conv2", "g3_bn2+g3_act2"}));
  for (const auto& group : plan.groups) {
    EXPECT_EQ(plan.group(group.bn), &group);
    EXPECT_EQ(plan.group(group.act), &group);
    EXPECT_FALSE(plan.runs_alone(group.bn));
    if (group.conv >= 0) {
      EXPECT_TRUE(plan.runs_alone(group.conv)) << "the convolution runs in its own slot";
    }
    EXPECT_EQ(group.kernel, cuda::GroupKernel::kiln);
    EXPECT_FALSE(group.reason.empty());
  }
  EXPECT_TRUE(cuda::plan_fusion(g, false).groups.empty()) << "--no-fusion";
}

TEST(Fusion, OnlyASoleActivationReaderFuses) {
  GraphBuilder b("edges", Shape::chw(3, 8, 8), 10);
  b.add(layers::conv(4, 3).pad(1).named("c0"))
      .add(layers::batchnorm().named("bn_shared"))  // read by the relu and the add: stays apart
      .add(layers::relu().named("r0"))
      .add(layers::add({"r0", "bn_shared"}).named("sum"))
      .add(layers::batchnorm().named("bn_pool"))  // read by a pool: nothing to fuse
      .add(layers::maxpool(2).named("pool"))
      .add(layers::batchnorm().named("bn_ok"))
      .add(layers::silu().named("act_branch"))  // read by two convs: fused, no convolution
      .add(layers::conv(4, 1).named("ca").from({"act_branch"}))
      .add(layers::conv(4, 1).named("cb").from({"act_branch"}))
      .add(layers::add({"ca", "cb"}).named("sum2"))
      .add(layers::batchnorm().named("bn_last"))
      .add(layers::tanh().named("t"))
      .add(layers::conv(4, 1).named("c_last"))
      .add(layers::global_avgpool().named("gap"))
      .add(layers::flatten().named("flat"))
      .add(layers::linear(10).named("fc"))
      .add(layers::batchnorm().named("bn_out"));  // the graph's output: its values are the logits
  Graph g = b.build();
  const cuda::FusionPlan plan = cuda::plan_fusion(g);
  EXPECT_EQ(names(g, plan), (std::vector<std::string>{"bn_ok+act_branch", "bn_last+t -> c_last"}));
  EXPECT_TRUE(plan.runs_alone(g.find("bn_shared")->index));
  EXPECT_TRUE(plan.runs_alone(g.find("bn_out")->index));
}

}  // namespace
}  // namespace kiln
