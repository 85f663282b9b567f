#include "cuda/fusion.hpp"

#include <fmt/format.h>

namespace kiln::cuda {

namespace {

const Layer& at(const Graph& graph, int index) { return graph.layers()[static_cast<std::size_t>(index)]; }

// The one layer reading `layer`, with `layer` as its only input; nullptr otherwise.
const Layer* sole_reader(const Graph& graph, const Layer& layer) {
  if (layer.consumers.size() != 1) return nullptr;
  const Layer& reader = at(graph, layer.consumers[0]);
  return reader.inputs.size() == 1 ? &reader : nullptr;
}

}  // namespace

std::string FusedGroup::name(const Graph& graph) const {
  std::string s = fmt::format("{}+{}", at(graph, bn).name, at(graph, act).name);
  if (conv >= 0) s += " -> " + at(graph, conv).name;
  return s;
}

bool fusable_activation(OpKind op) {
  switch (op) {
    case OpKind::relu:
    case OpKind::leaky_relu:
    case OpKind::gelu:
    case OpKind::silu:
    case OpKind::sigmoid:
    case OpKind::tanh:
      return true;
    default:
      return false;
  }
}

FusionPlan plan_fusion(const Graph& graph, bool fuse) {
  FusionPlan plan;
  plan.group_of.assign(graph.layers().size(), -1);
  if (!fuse) return plan;
  const int output = graph.output().index;
  for (const Layer& layer : graph.layers()) {
    if (layer.op != OpKind::batchnorm || layer.index == output) continue;
    const Layer* act = sole_reader(graph, layer);
    if (!act || !fusable_activation(act->op)) continue;
    FusedGroup g;
    g.bn = layer.index;
    g.act = act->index;
    if (const Layer* conv = act->index == output ? nullptr : sole_reader(graph, *act); conv && conv->op == OpKind::conv)
      g.conv = conv->index;
    // The cuDNN prologue-fused convolution is compiled and reported (compile_fused_conv),
    // but the executor has not run it on a GPU: kiln's fused kernel runs every group.
    g.reason = g.conv >= 0 ? "kiln's kernel runs the group by default; with --cudnn-fusion cuDNN's prologue fusion runs "
                             "it where cuDNN has engines (not yet checked on a GPU)"
                           : "no convolution follows: kiln's kernel";
    const int id = static_cast<int>(plan.groups.size());
    plan.group_of[static_cast<std::size_t>(g.bn)] = id;
    plan.group_of[static_cast<std::size_t>(g.act)] = id;
    plan.groups.push_back(std::move(g));
  }
  return plan;
}

}  // namespace kiln::cuda
