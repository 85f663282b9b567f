#pragma once

// Which layers the CUDA backend runs together (host code, no device needed). A batchnorm
// whose only reader is an activation runs with it as one kiln kernel each way (the
// normalized value is never stored: backward recomputes it), and where that activation's
// only reader is a convolution the three form cuDNN's scale-bias-activation-conv-genstats
// pattern: the batchnorm's apply and the activation folded into the convolution's prologue.
// The executor, `kiln check --target cuda` and `kiln bench` read the same plan, so what
// check shows is what a run does.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kiln/graph.hpp"
#include "kiln/types.hpp"

namespace kiln::cuda {

// How a group runs. The plan gives every group kiln's kernel; whether a group ending in a
// convolution runs on cuDNN instead (--cudnn-fusion) is decided per batch size on the device,
// by whether cuDNN has engines for it (FusedConvs), not here.
enum class GroupKernel {
  kiln,   // batchnorm + activation: kiln's fused kernel pair (batchnorm_act_forward/backward)
  cudnn,  // batchnorm + activation -> conv: cuDNN's prologue-fused graphs
};

struct FusedGroup {
  int bn = -1;    // the batchnorm layer
  int act = -1;   // the activation reading only it
  int conv = -1;  // the convolution reading only the activation; -1: none
  GroupKernel kernel = GroupKernel::kiln;
  // Why the group runs as it does: "cuDNN's pattern takes no gelu prologue", "no GPU to ask
  // for an engine", ...
  std::string reason;

  // "bn1+gelu1 -> conv2", "bn1+relu1"
  std::string name(const Graph& graph) const;
};

struct FusionPlan {
  std::vector<FusedGroup> groups;
  std::vector<int> group_of;  // per layer: its group's index, -1 for a layer run alone

  // The group layer `index` belongs to (nullptr: none).
  const FusedGroup* group(int index) const {
    const int g = group_of.at(static_cast<std::size_t>(index));
    return g < 0 ? nullptr : &groups[static_cast<std::size_t>(g)];
  }
  // The layer whose op-table slot runs the group (its batchnorm); the other members' runs
  // are skipped.
  bool runs_alone(int index) const { return group_of.at(static_cast<std::size_t>(index)) < 0; }
};

// Whether `op` is an activation kiln's fused batchnorm kernels apply.
bool fusable_activation(OpKind op);

// The groups of `graph`: each batchnorm whose output is read by exactly one layer, an
// activation with that one input, and which is not the graph's output. `fuse` false (the
// executor's --no-fusion) gives an empty plan. Every group runs as kiln's kernel unless the
// executor's --cudnn-fusion finds cuDNN engines for its prologue-fused convolution
// (cuda/fused_convs.hpp); `kiln check` compiles and reports those graphs.
FusionPlan plan_fusion(const Graph& graph, bool fuse = true);

}  // namespace kiln::cuda
