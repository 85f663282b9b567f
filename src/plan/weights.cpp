#include "plan/weights.hpp"

namespace kiln::detail {

NamedTensor param_tensor(const CompiledPlan& plan, std::size_t index, const std::string& name, ParamSlot slot) {
  const Param& p = plan.graph().params()[index];
  NamedTensor t;
  t.name = name;
  t.dims = p.dims;
  t.f32.resize(static_cast<std::size_t>(p.elements));
  if (slot == ParamSlot::momentum) plan.read_momentum(index, t.f32);
  else if (slot == ParamSlot::ema) plan.read_ema(index, t.f32);
  else plan.read_param(index, t.f32);
  return t;
}

SafetensorsFile weights_file(const CompiledPlan& plan, std::int64_t batches_tracked) {
  SafetensorsFile file;
  const Graph& graph = plan.graph();
  auto params = graph.params();
  for (std::size_t i = 0; i < params.size(); ++i) {
    file.tensors.push_back(param_tensor(plan, i, params[i].name, ParamSlot::weight));
    // PyTorch's BatchNorm state dict ends with num_batches_tracked; strict loading wants it.
    const Layer& layer = graph.layers()[static_cast<std::size_t>(params[i].layer)];
    if (params[i].role == ParamRole::running_var && layer.op == OpKind::batchnorm) {
      NamedTensor t;
      t.name = layer.name + ".num_batches_tracked";
      t.type = TensorType::i64;
      t.i64 = {batches_tracked};
      file.tensors.push_back(std::move(t));
    }
  }
  file.metadata["format"] = "pt";
  file.metadata["model"] = graph.name();
  return file;
}

void load_weights_file(CompiledPlan& plan, const SafetensorsFile& file, const std::string& path) {
  auto matched = match_weights(plan.graph(), file, path);
  for (std::size_t i = 0; i < matched.size(); ++i) plan.write_param(i, matched[i]->f32);
}

}  // namespace kiln::detail
