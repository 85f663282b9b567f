#include "cuda/fused_convs.hpp"

#include <algorithm>
#include <array>
#include <fmt/format.h>

namespace kiln::cuda {

bool FusedConvs::build(const Graph& graph, const FusedGroup& g, int group, std::int64_t n, bool wgrad,
                       std::int64_t workspace_limit) {
  if (plans_.count({group, n})) return true;
  if (refused_.count(group)) return false;
  auto refuse = [&](std::string why) {
    refused_.emplace(group, std::move(why));
    return false;
  };
  // The scale and shift are read where the batchnorm's state keeps them (state + 2C, + 3C),
  // which cuDNN's 16-byte aligned tensors need C to be a multiple of 4 for.
  if (const std::int64_t c = graph.layers()[static_cast<std::size_t>(g.bn)].shape.c; c % 4 != 0)
    return refuse(fmt::format("{} channels: the batchnorm's saved scale and shift are not 16-byte aligned", c));
  FusedConvPlans p;
  p.compiled = std::make_unique<FusedConvCompiled>();
  FusedConvCompiled& c = *p.compiled;
  std::string failed;
  const Target target{Backend::cuda, n, dtype_, layout_};
  if (Status s = compile_fused_conv(graph, g, target, c, failed); !s.ok())
    return refuse(fmt::format("cuDNN refused {}: {}", failed, s.message));
  const std::string name = g.name(graph);
  try {
    const FusedPrologue& f = c.fwd_prologue;
    const std::array fwd{f.mul.get(), f.add.get(), f.act.get(), c.conv_fwd.get(), c.genstats.get()};
    p.fwd.emplace(handle_, fwd, dtype_, policy_, workspace_limit, 1, name + " (fused forward)");
    if (wgrad) {
      const FusedPrologue& w = c.wgrad_prologue;
      const std::array bwd{w.mul.get(), w.add.get(), w.act.get(), c.conv_wgrad.get()};
      p.wgrad.emplace(handle_, bwd, dtype_, policy_, workspace_limit, 1, name + " (fused wgrad)");
    }
  } catch (const DeviceError& e) {  // no engine, or a cuDNN call refusing the graph: kiln's kernel runs it
    return refuse(e.what());
  }
  plans_.emplace(std::make_pair(group, n), std::move(p));
  return true;
}

FusedConvPlans* FusedConvs::find(int group, std::int64_t n) {
  auto it = plans_.find({group, n});
  return it == plans_.end() ? nullptr : &it->second;
}

void FusedConvs::bind(FusedConvPlans& p, const FusedConvBinding& b) {
  const FusedConvCompiled& c = *p.compiled;
  const std::array<std::int64_t, 7> fwd_uids{c.conv.x.uid, c.scale.uid, c.bias.uid, c.conv.w.uid,
                                             c.conv.y.uid, c.sum.uid,   c.sqsum.uid};
  const std::array<void*, 7> fwd_ptrs{b.x, b.scale, b.bias, b.w, b.y, b.sum, b.sqsum};
  p.fwd->bind(fwd_uids, fwd_ptrs, b.workspace);
  if (p.wgrad) {
    const std::array<std::int64_t, 5> uids{c.conv.x.uid, c.scale.uid, c.bias.uid, c.conv.dy.uid, c.conv.dw.uid};
    const std::array<void*, 5> ptrs{b.x, b.scale, b.bias, b.dy, b.dw};
    p.wgrad->bind(uids, ptrs, b.workspace);
  }
}

std::int64_t FusedConvs::workspace() const {
  std::int64_t w = 0;
  for (const auto& [key, p] : plans_) {
    w = std::max(w, p.fwd->workspace());
    if (p.wgrad) w = std::max(w, p.wgrad->workspace());
  }
  return w;
}

std::string FusedConvs::why_not(int group) const {
  auto it = refused_.find(group);
  return it == refused_.end() ? std::string() : it->second;
}

std::string FusedConvs::describe(int group, std::int64_t n) const {
  auto it = plans_.find({group, n});
  if (it == plans_.end()) return {};
  std::string out = "cuDNN fused fwd " + it->second.fwd->describe();
  if (it->second.wgrad) out += "; fused wgrad " + it->second.wgrad->describe();
  return out;
}

}  // namespace kiln::cuda
