// kiln::Plan: the public face of a compiled plan (plan/compiled_plan.hpp), the same layer
// the Trainer, evaluation and `kiln bench` run on.
#include "kiln/plan.hpp"

#include <fmt/format.h>
#include <utility>

#include "plan/compiled_plan.hpp"
#include "plan/evaluation.hpp"
#include "plan/weights.hpp"

namespace kiln {

struct Plan::Impl {
  Target target;
  std::unique_ptr<detail::CompiledPlan> compiled;
  bool tta = false;  // CompileOptions::tta
  // Batchnorm's num_batches_tracked as last loaded, written back by weights() so that a
  // checkpoint survives a round trip through a plan.
  std::int64_t batches_tracked = 0;

  std::size_t checked_index(std::size_t index) const {
    const Graph& graph = compiled->graph();
    if (index >= graph.params().size())
      throw UsageError(fmt::format("parameter index {} is out of range: model '{}' has {} parameters and buffers", index,
                                   graph.name(), graph.params().size()));
    return index;
  }
};

Plan compile(const Graph& graph, const Target& target, const CompileOptions& options) {
  detail::PlanSpec spec;
  spec.batch = target.batch;
  spec.input = {options.mean, options.std, math::PadMode::zero};
  spec.seed = options.seed;
  spec.execution = detail::resolve_options(target, options);
  auto impl = std::make_unique<Plan::Impl>();
  impl->target = target;
  impl->compiled = detail::compile_plan(graph, spec);
  impl->tta = options.tta;
  return Plan(std::move(impl));
}

Plan::Plan(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Plan::~Plan() = default;
Plan::Plan(Plan&&) noexcept = default;
Plan& Plan::operator=(Plan&&) noexcept = default;

const Graph& Plan::graph() const { return impl_->compiled->graph(); }
const Target& Plan::target() const { return impl_->target; }
std::int64_t Plan::batch() const { return impl_->compiled->capacity(); }
const MemoryPlan& Plan::memory() const { return impl_->compiled->memory(); }
std::string Plan::describe() const { return impl_->compiled->describe(); }

std::vector<float> Plan::predict(const std::uint8_t* images, std::int64_t n) {
  return detail::predict(*impl_->compiled, images, n, impl_->tta);
}

std::vector<float> Plan::predict(std::span<const Image> images, bool resize) {
  const Shape input = graph().input_shape();
  std::vector<std::uint8_t> pixels;
  pixels.reserve(images.size() * static_cast<std::size_t>(input.elements()));
  for (std::size_t i = 0; i < images.size(); ++i) {
    const Image fitted = fit_image(images[i], input, resize, fmt::format("image {}", i));
    pixels.insert(pixels.end(), fitted.pixels.begin(), fitted.pixels.end());
  }
  return predict(pixels.data(), static_cast<std::int64_t>(images.size()));
}

std::vector<float> Plan::predict(const std::string& path, bool resize) {
  const Image fitted = fit_image(decode_image(path), graph().input_shape(), resize, path);
  return predict(fitted.pixels.data(), 1);
}

std::vector<float> Plan::predict(std::span<const std::uint8_t> images) {
  const auto plane = static_cast<std::size_t>(graph().input_shape().elements());
  if (images.size() % plane != 0)
    throw UsageError(fmt::format("predict: {} bytes are not a whole number of {} images ({} bytes each)", images.size(),
                                 graph().input_shape().str(), plane));
  return predict(images.data(), static_cast<std::int64_t>(images.size() / plane));
}

Evaluation Plan::evaluate(const Dataset& data) { return detail::evaluate(*impl_->compiled, data, {impl_->tta, 0.0f}); }

std::vector<float> Plan::read_param(std::size_t index) const {
  const Param& p = graph().params()[impl_->checked_index(index)];
  std::vector<float> values(static_cast<std::size_t>(p.elements));
  impl_->compiled->read_param(index, values);
  return values;
}

std::vector<float> Plan::read_param(std::string_view name) const {
  auto params = graph().params();
  for (std::size_t i = 0; i < params.size(); ++i)
    if (params[i].name == name) return read_param(i);
  throw UsageError(fmt::format("model '{}' has no parameter or buffer named '{}'", graph().name(), name));
}

void Plan::write_param(std::size_t index, std::span<const float> values) {
  const Param& p = graph().params()[impl_->checked_index(index)];
  if (static_cast<std::int64_t>(values.size()) != p.elements)
    throw UsageError(fmt::format("parameter '{}' has {} elements, got {} values", p.name, p.elements, values.size()));
  impl_->compiled->write_param(index, values);
}

SafetensorsFile Plan::weights() const { return detail::weights_file(*impl_->compiled, impl_->batches_tracked); }

void Plan::set_weights(const SafetensorsFile& file, const std::string& source) {
  detail::load_weights_file(*impl_->compiled, file, source);
  constexpr std::string_view suffix = ".num_batches_tracked";
  for (const NamedTensor& t : file.tensors)
    if (t.type == TensorType::i64 && t.i64.size() == 1 && t.name.ends_with(suffix)) {
      impl_->batches_tracked = t.i64[0];
      break;
    }
}

void Plan::save_weights(const std::string& path) const { write_safetensors(path, weights()); }

void Plan::load_weights(const std::string& path) { set_weights(read_safetensors(path), path); }

}  // namespace kiln
