// The CUDA executor's construction (a few named steps: compile, plans, arena, bindings) and
// the host-side access to parameters. The step itself is in cuda_step.cpp.
#include "cuda/cuda_executor.hpp"

#include <algorithm>
#include <fmt/format.h>

#include "backend/cpu_ops.hpp"
#include "graph/memory_blocks.hpp"
#include "kiln/cudnn.hpp"
#include "kiln/format.hpp"
#include "util/checked.hpp"

namespace kiln::cuda {

namespace {


// The capacity first, then every other declared size once.
std::vector<std::int64_t> planned_batch_sizes(std::int64_t capacity, const std::vector<std::int64_t>& declared) {
  std::vector<std::int64_t> sizes{capacity};
  for (std::int64_t n : declared) {
    if (n < 1 || n > capacity)
      throw UsageError(fmt::format("CUDA plan batch sizes: {} is outside 1..{} (the plan's capacity)", n, capacity));
    if (std::find(sizes.begin(), sizes.end(), n) == sizes.end()) sizes.push_back(n);
  }
  return sizes;
}

// Each fused group's activation runs in its batchnorm's slots: the memory plan keeps its
// output and gradient alive there.
std::vector<detail::RunsAt> runs_at(const FusionPlan& fusion) {
  std::vector<detail::RunsAt> out;
  for (const FusedGroup& g : fusion.groups) out.push_back({.layer = g.act, .at = g.bn});
  return out;
}

bool krsc_weight(const Graph& g, Layout layout, std::size_t p) {
  const Param& param = g.params()[p];
  return layout == Layout::nhwc && param.role == ParamRole::weight &&
         cuda_op(g.layers()[static_cast<std::size_t>(param.layer)].op).krsc_weight_in_nhwc;
}

// PyTorch's [K, C, R, S] to the [K, R, S, C] order cuDNN's NHWC engines use, and back.
void kcrs_to_krsc(const float* src, float* dst, const std::vector<std::int64_t>& d) {
  const std::int64_t K = d[0], C = d[1], R = d[2], S = d[3];
  for (std::int64_t k = 0; k < K; ++k)
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t r = 0; r < R; ++r)
        for (std::int64_t s = 0; s < S; ++s) dst[((k * R + r) * S + s) * C + c] = src[((k * C + c) * R + r) * S + s];
}
void krsc_to_kcrs(const float* src, float* dst, const std::vector<std::int64_t>& d) {
  const std::int64_t K = d[0], C = d[1], R = d[2], S = d[3];
  for (std::int64_t k = 0; k < K; ++k)
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t r = 0; r < R; ++r)
        for (std::int64_t s = 0; s < S; ++s) dst[((k * C + c) * R + r) * S + s] = src[((k * R + r) * S + s) * C + c];
}

}  // namespace

CudaExecutor::CudaExecutor(const Graph& graph, std::int64_t batch, const detail::CudaOptions& options)
    : graph_(graph),
      batch_(batch),
      options_(options),
      fusion_(plan_fusion(graph, options.fusion)),
      plan_(detail::plan_memory(graph, batch, options.dtype, PlanMode::train, options.layout, runs_at(fusion_))),
      batch_sizes_(planned_batch_sizes(batch, options.batch_sizes)),
      device_(options),  // first to touch the device: kiln's message when there is none
      convs_(device_.cudnn(), options.dtype, options.layout, {.tf32 = options.tf32, .deterministic = options.deterministic}),
      fused_convs_(device_.cudnn(), options.dtype, options.layout,
                   {.tf32 = options.tf32, .deterministic = options.deterministic}),
      staging_(batch, graph.input_shape(), options.pipeline),
      values_(graph.params().size()) {
  check_memory_before_planning();
  // What `kiln check --target cuda` runs: a layer cuDNN refuses is a build error (GraphError).
  compile_cudnn(graph_, Target{Backend::cuda, batch, options.dtype, options.layout});
  bind_layers_to_graph();
  for (std::int64_t n : batch_sizes_) build_plans(n, options.workspace_limit, options.autotune ? 4 : 1);
  workspace_bytes_ = std::max(convs_.workspace(options.autotune), fused_convs_.workspace());
  allocate_arena();
  bind_layers_to_memory();
  for (std::int64_t n : batch_sizes_) bind_plans(n);
  if (options.autotune) convs_.autotune(device_.stream(), 3);
  for (std::size_t i = 0; i < runs_.size(); ++i) layer_events_.emplace_back(Event(true), Event(true));
  times_.assign(runs_.size(), {});
  KILN_CUDA_CHECK(cudaStreamSynchronize(device_.stream()));
}

// Fails early, before cuDNN sees tensors too large to describe, when the parameters and
// activations alone exceed the device.
void CudaExecutor::check_memory_before_planning() const {
  // The four parameter-shaped blocks (parameters, gradients, momentum, averages) and the activations.
  check_fits(4 * plan_.param_block_bytes + plan_.arena_bytes, 4 * plan_.param_block_bytes, 0);
}

void CudaExecutor::bind_layers_to_graph() {
  runs_.resize(graph_.layers().size());
  group_of_conv_.assign(graph_.layers().size(), -1);
  // The fused convolution reads the batchnorm's input in forward and in its weight gradient:
  // the memory plan keeps that input until the batchnorm's backward only where the batchnorm
  // has one (a frozen stem's batchnorm does not), so only such groups qualify.
  if (options_.cudnn_fusion)
    for (std::size_t gi = 0; gi < fusion_.groups.size(); ++gi)
      if (const FusedGroup& g = fusion_.groups[gi]; g.conv >= 0 && plan_.gradient[static_cast<std::size_t>(g.bn)] >= 0)
        group_of_conv_[static_cast<std::size_t>(g.conv)] = static_cast<int>(gi);
  for (const Layer& layer : graph_.layers()) {
    LayerRun& run = runs_[static_cast<std::size_t>(layer.index)];
    run.layer = &layer;
    const CudaOp& op = cuda_op(layer.op);
    run.view = op.is_view && op.is_view(graph_, layer, options_.layout);
    run.fwd_name = layer.name + "/fwd";
    run.bwd_name = layer.name + "/bwd";
  }
}

void CudaExecutor::build_plans(std::int64_t n, std::int64_t workspace_limit, int candidates) {
  for (const Layer& layer : graph_.layers()) {
    const CudaOp& op = cuda_op(layer.op);
    if (op.prepare) op.prepare(layer, prepare_context(graph_, plan_, layer, convs_, n, workspace_limit, candidates));
  }
  // --cudnn-fusion: the groups ending in a convolution, where cuDNN has engines (the rest keep
  // kiln's kernel). Only for a training plan's layers whose gradients exist, as the
  // unfused convolution's prepare decides.
  for (int gi : group_of_conv_) {
    if (gi < 0) continue;
    const FusedGroup& g = fusion_.groups[static_cast<std::size_t>(gi)];
    const auto weight = static_cast<std::size_t>(graph_.layers()[static_cast<std::size_t>(g.conv)].params[0]);
    fused_convs_.build(graph_, g, gi, n, detail::gets_gradient(graph_, plan_, weight), workspace_limit);
  }
}

// The arena is the memory plan's one allocation: the planner's parameter-shaped blocks
// (every parameter 256-byte aligned) and activations, and what this backend adds, known once
// the cuDNN plans are built — each layer's state, the scratch of convolutions whose input
// gradient accumulates, the workspace, and staging (labels, the stats ring, the pipeline).
void CudaExecutor::allocate_arena() {
  detail::BackendMemory needs;
  for (const Layer& layer : graph_.layers()) {
    needs.state_bytes.push_back(cuda_op(layer.op).state_floats(layer) * 4);
    const auto& acc = plan_.accumulate[static_cast<std::size_t>(layer.index)];
    if (cuda_op(layer.op).dx_via_scratch && !acc.empty() && acc[0] &&
        plan_.gradient[static_cast<std::size_t>(layer.inputs[0])] >= 0)
      scratch_bytes_ = std::max(scratch_bytes_, batch_ * graph_.layers()[static_cast<std::size_t>(layer.inputs[0])].shape.elements() *
                                                    size_of(options_.dtype));
  }
  // bf16/fp16: the dtype copies of conv and linear parameters, and their gradients: half a
  // parameter block each (2-byte elements at the masters' offsets, so 128-byte aligned).
  in_dtype_.clear();
  if (options_.dtype != DType::f32)
    for (const Layer& layer : graph_.layers())
      if (detail::params_in_dtype(layer))
        for (int p : layer.params) in_dtype_.push_back(static_cast<std::size_t>(p));
  if (!in_dtype_.empty()) needs.rounded_weights_bytes = 2 * (plan_.param_block_bytes / 4) * size_of(options_.dtype);
  // The scratch sits at the workspace's start, cuDNN's workspace after it: both are used by
  // one backward-data call.
  const std::int64_t scratch_span = detail::align_up(scratch_bytes_, MemoryPlan::alignment);
  needs.workspace_bytes = scratch_span + workspace_bytes_;
  const std::int64_t labels_span = detail::align_up(batch_ * 4, MemoryPlan::alignment);
  const std::int64_t stats_span = detail::align_up(StatsRing::kBlockBytes, MemoryPlan::alignment);
  const std::int64_t scaler_span = detail::align_up(static_cast<std::int64_t>(sizeof(LossScaler)), MemoryPlan::alignment);
  const std::int64_t values_span = StepValues::bytes(graph_.params().size());
  needs.staging_bytes =
      labels_span + stats_span + scaler_span + values_span + Staging::arena_bytes(batch_, graph_.input_shape());
  detail::lay_out_blocks(graph_, plan_, &needs);
  check_fits(plan_.total_bytes, 4 * plan_.param_block_bytes, workspace_bytes_);

  arena_ = DeviceBuffer(static_cast<std::size_t>(plan_.total_bytes));
  // --cudnn-fusion: where each group's fused convolution writes its output's statistics.
  fused_stats_at_.assign(fusion_.groups.size(), 0);
  std::int64_t stats_floats = 0;
  for (std::size_t gi = 0; gi < fusion_.groups.size(); ++gi)
    if (const int conv = fusion_.groups[gi].conv; conv >= 0 && options_.cudnn_fusion) {
      fused_stats_at_[gi] = stats_floats;  // sum, then sum of squares, each 16-byte aligned (cuDNN's tensors)
      stats_floats += 2 * detail::align_up(graph_.layers()[static_cast<std::size_t>(conv)].shape.c, 4);
    }
  if (stats_floats) fused_stats_ = DeviceBuffer(static_cast<std::size_t>(stats_floats) * 4);
  std::byte* base = arena_.data();
  auto block = [&](const char* name) { return base + plan_.block(name)->offset; };
  params_ = reinterpret_cast<float*>(block("parameters"));
  grads_ = reinterpret_cast<float*>(block("gradients"));
  momentum_ = reinterpret_cast<float*>(block("momentum"));
  ema_ = reinterpret_cast<float*>(block("averages"));
  param_floats_ = plan_.param_block_bytes / 4;
  param_offset_.clear();
  for (std::int64_t offset : plan_.param_offsets) param_offset_.push_back(offset / 4);
  activations_ = block("activations");
  state_ = reinterpret_cast<float*>(block("state"));
  scratch_ = scratch_bytes_ ? block("workspace") : nullptr;
  if (!in_dtype_.empty()) {
    dtype_params_ = block("rounded weights");
    dtype_grads_ = dtype_params_ + (plan_.param_block_bytes / 4) * size_of(options_.dtype);
  }
  workspace_ = block("workspace") + scratch_span;
  std::byte* staging = block("staging");
  labels_ = reinterpret_cast<std::int32_t*>(staging);
  KILN_CUDA_CHECK(cudaMemsetAsync(base, 0, static_cast<std::size_t>(plan_.total_bytes), device_.stream()));
  stats_.bind(staging + labels_span);
  if (options_.dtype == DType::f16) {
    scaler_ = reinterpret_cast<LossScaler*>(staging + labels_span + stats_span);
    set_loss_scale({detail::LossScale::kInitial, 0});
  }
  values_.bind(staging + labels_span + stats_span + scaler_span);
  staging_.bind(staging + labels_span + stats_span + scaler_span + values_span, device_.stream());
}

void CudaExecutor::bind_layers_to_memory() {
  auto buffer = [&](int b) -> void* {
    return b < 0 ? nullptr : activations_ + plan_.buffers[static_cast<std::size_t>(b)].offset;
  };
  const std::int64_t element = size_of(options_.dtype);
  float* state = state_;
  for (const Layer& layer : graph_.layers()) {
    LayerRun& run = runs_[static_cast<std::size_t>(layer.index)];
    run.y = buffer(plan_.activation[static_cast<std::size_t>(layer.index)]);
    run.dy = buffer(plan_.gradient[static_cast<std::size_t>(layer.index)]);
    const auto& acc = plan_.accumulate[static_cast<std::size_t>(layer.index)];
    for (std::size_t slot = 0; slot < layer.inputs.size(); ++slot) {
      run.x.push_back(buffer(plan_.activation[static_cast<std::size_t>(layer.inputs[slot])]));
      run.dx.push_back(buffer(plan_.gradient[static_cast<std::size_t>(layer.inputs[slot])]));
      run.accumulate.push_back(slot < acc.size() && acc[slot]);
    }
    const bool in_dtype = dtype_params_ && detail::params_in_dtype(layer);
    for (int p : layer.params) {
      const auto index = static_cast<std::size_t>(p);
      const bool grad = detail::gets_gradient(graph_, plan_, index);
      if (in_dtype) {
        run.params.push_back(dtype_params_ + param_offset_[index] * element);
        run.grads.push_back(grad ? dtype_grads_ + param_offset_[index] * element : nullptr);
      } else {
        run.params.push_back(params_ + param_offset_[index]);
        run.grads.push_back(grad ? grads_ + param_offset_[index] : nullptr);
      }
    }
    if (const std::int64_t at = plan_.state_offsets[static_cast<std::size_t>(layer.index)]; at >= 0) run.state = state + at / 4;
  }
}

void CudaExecutor::bind_plans(std::int64_t n) {
  const BindContext ctx{.convs = &convs_, .n = n, .scratch = scratch_, .workspace = workspace_};
  for (const Layer& layer : graph_.layers())
    if (const CudaOp& op = cuda_op(layer.op); op.bind) op.bind(layer, runs_[static_cast<std::size_t>(layer.index)], ctx);
  for (std::size_t gi = 0; gi < fusion_.groups.size(); ++gi) {
    FusedConvPlans* p = fused_convs_.find(static_cast<int>(gi), n);
    if (!p) continue;
    const FusedGroup& g = fusion_.groups[gi];
    const LayerRun& bn = runs_[static_cast<std::size_t>(g.bn)];
    const LayerRun& conv = runs_[static_cast<std::size_t>(g.conv)];
    const std::int64_t c = graph_.layers()[static_cast<std::size_t>(g.bn)].shape.c;
    const std::int64_t k = graph_.layers()[static_cast<std::size_t>(g.conv)].shape.c;
    float* stats = reinterpret_cast<float*>(fused_stats_.data()) + fused_stats_at_[gi];
    fused_convs_.bind(*p, {.x = bn.x[0], .scale = bn.state + 2 * c, .bias = bn.state + 3 * c, .w = conv.params[0],
                           .y = conv.y, .sum = stats, .sqsum = stats + detail::align_up(k, 4), .dy = conv.dy,
                           .dw = conv.grads[0],
                           .workspace = workspace_});
  }
}

void CudaExecutor::prepare_batches(std::span<const std::int64_t> sizes) {
  for (std::int64_t n : sizes)
    if (n >= 1 && n <= batch_) ensure_plans(n);
}

void CudaExecutor::ensure_plans(std::int64_t n) {
  if (std::find(batch_sizes_.begin(), batch_sizes_.end(), n) != batch_sizes_.end()) return;
  build_plans(n, workspace_bytes_, 1);  // within the workspace the arena has
  bind_plans(n);
  batch_sizes_.push_back(n);
}

void CudaExecutor::check_fits(std::int64_t total, std::int64_t param_state, std::int64_t workspace) const {
  std::size_t free_bytes = 0, total_bytes = 0;
  KILN_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (total <= static_cast<std::int64_t>(free_bytes)) return;
  // What one sample costs: the activations and its staging bytes scale with the batch.
  const std::int64_t per_sample = std::max<std::int64_t>(1, plan_.arena_bytes / batch_ + graph_.input_shape().elements());
  const std::int64_t fixed = std::max<std::int64_t>(0, total - per_sample * batch_);
  const std::int64_t fits = std::max<std::int64_t>(0, (static_cast<std::int64_t>(free_bytes) - fixed) / per_sample);
  throw DeviceError(fmt::format(
      "out of device memory: the plan for batch {} needs {} ({} bytes): parameters, gradients and momentum {}, activations {} "
      "(the memory plan's peak), cuDNN workspace {}, other {}; the device has {} free of {}\n"
      "    hint: the largest batch that would fit is about {}",
      batch_, format_bytes(total), total, format_bytes(param_state), format_bytes(plan_.arena_bytes), format_bytes(workspace),
      format_bytes(std::max<std::int64_t>(0, total - param_state - plan_.arena_bytes - workspace)),
      format_bytes(static_cast<std::int64_t>(free_bytes)), format_bytes(static_cast<std::int64_t>(total_bytes)), fits));
}

void CudaExecutor::copy_param(std::size_t index, std::span<float> out, const float* base) const {
  recorder_.flush();
  const Param& p = graph_.params()[index];
  std::vector<float> host(static_cast<std::size_t>(p.elements));
  KILN_CUDA_CHECK(
      cudaMemcpyAsync(host.data(), base + param_offset_[index], host.size() * 4, cudaMemcpyDeviceToHost, device_.stream()));
  KILN_CUDA_CHECK(cudaStreamSynchronize(device_.stream()));
  if (krsc_weight(graph_, options_.layout, index)) {
    std::vector<float> kcrs(host.size());
    krsc_to_kcrs(host.data(), kcrs.data(), p.dims);
    host.swap(kcrs);
  }
  std::copy_n(host.begin(), std::min(host.size(), out.size()), out.begin());
}

void CudaExecutor::upload_param(std::size_t index, std::span<const float> in, float* base) {
  recorder_.flush();
  const Param& p = graph_.params()[index];
  std::vector<float> host(static_cast<std::size_t>(p.elements), 0.0f);
  std::copy_n(in.begin(), std::min(host.size(), in.size()), host.begin());
  if (krsc_weight(graph_, options_.layout, index)) {
    std::vector<float> krsc(host.size());
    kcrs_to_krsc(host.data(), krsc.data(), p.dims);
    host.swap(krsc);
  }
  KILN_CUDA_CHECK(
      cudaMemcpyAsync(base + param_offset_[index], host.data(), host.size() * 4, cudaMemcpyHostToDevice, device_.stream()));
  KILN_CUDA_CHECK(cudaStreamSynchronize(device_.stream()));
}

void CudaExecutor::read_param(std::size_t i, std::span<float> out) const { copy_param(i, out, params_); }
void CudaExecutor::write_param(std::size_t i, std::span<const float> in) { upload_param(i, in, params_); }
void CudaExecutor::read_momentum(std::size_t i, std::span<float> out) const { copy_param(i, out, momentum_); }
void CudaExecutor::write_momentum(std::size_t i, std::span<const float> in) { upload_param(i, in, momentum_); }
void CudaExecutor::read_grad(std::size_t i, std::span<float> out) const { copy_param(i, out, grads_); }
void CudaExecutor::read_ema(std::size_t i, std::span<float> out) const { copy_param(i, out, ema_); }
void CudaExecutor::write_ema(std::size_t i, std::span<const float> in) { upload_param(i, in, ema_); }

detail::LossScale CudaExecutor::loss_scale() const {
  recorder_.flush();
  if (!scaler_) return {};
  LossScaler s{};
  KILN_CUDA_CHECK(cudaMemcpyAsync(&s, scaler_, sizeof s, cudaMemcpyDeviceToHost, device_.stream()));
  KILN_CUDA_CHECK(cudaStreamSynchronize(device_.stream()));
  return {s.scale, s.good_steps};
}

void CudaExecutor::set_loss_scale(const detail::LossScale& scale) {
  recorder_.flush();
  if (!scaler_) return;
  const LossScaler s{.scale = scale.scale, .skip = 0u, .good_steps = scale.good_steps};
  KILN_CUDA_CHECK(cudaMemcpyAsync(scaler_, &s, sizeof s, cudaMemcpyHostToDevice, device_.stream()));
  KILN_CUDA_CHECK(cudaStreamSynchronize(device_.stream()));  // s lives on this stack
}

std::string CudaExecutor::describe() const {
  return fmt::format("cuda, {}, {}, {}{}{}{}{}", device_.name(), to_string(options_.dtype), to_string(options_.layout),
                     options_.tf32 ? ", tf32" : "", options_.deterministic ? "" : ", nondeterministic",
                     options_.cuda_graph ? "" : ", no CUDA graph",
                     !options_.fusion ? ", no fusion" : options_.cudnn_fusion ? ", cuDNN fusion" : "");
}

}  // namespace kiln::cuda

namespace kiln::detail {

std::unique_ptr<Executor> make_cuda_executor(const Graph& graph, std::int64_t batch, const CudaOptions& options) {
  return std::make_unique<cuda::CudaExecutor>(graph, batch, options);
}

}  // namespace kiln::detail
