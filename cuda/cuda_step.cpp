// The CUDA executor's step: staging, forward, loss, backward and the optimizer, each layer
// through its op table entry (a fused group in its batchnorm's slot), in the order and with
// the memory the plan gives. A training step's parts go through the StepRecorder, which runs
// them, captures them into a CUDA graph or replays it (cuda/step_graph.hpp); the parts
// themselves are the StepRunner functions below. Nothing here allocates or waits for the
// device, except while profiling (an event wait per layer) and the bounded back-pressure of
// Staging, StatsRing and StepValues.
#include <fmt/format.h>
#include <vector>

#include "cuda/cuda_executor.hpp"
#include "cuda/kernels.hpp"
#include "math/half.hpp"
#include "trace/trace.hpp"

namespace kiln::cuda {

StepContext CudaExecutor::step_context(bool train) {
  StepContext ctx;
  ctx.graph = &graph_;
  ctx.layout = options_.layout;
  ctx.dtype = options_.dtype;
  ctx.n = n_;
  ctx.train = train;
  ctx.step = values_.step();
  ctx.stream = device_.stream();
  ctx.cudnn = device_.cudnn();
  ctx.cublas = device_.cublas();
  ctx.convs = &convs_;
  ctx.scratch = scratch_;
  return ctx;
}

void CudaExecutor::stage(const detail::HostBatch& batch, const detail::InputTransform& transform) {
  recorder_.flush();
  LayerScope scope("data staging");
  n_ = batch.n;
  const Shape in = graph_.input_shape();
  const math::Dims4 dims{n_, in.c, in.h, in.w, options_.layout == Layout::nhwc && in.is_image()};
  staging_.stage(batch, transform, runs_[0].y, options_.dtype, dims, labels_, device_.stream());
}

std::uint64_t CudaExecutor::make_resident(const Dataset& data) {
  recorder_.flush();
  return staging_.make_resident(data);
}

void CudaExecutor::time_layer(std::size_t index, bool forward) {
  auto& [start, stop] = layer_events_[index];
  KILN_CUDA_CHECK(cudaEventRecord(stop.get(), device_.stream()));
  KILN_CUDA_CHECK(cudaEventSynchronize(stop.get()));  // profiling only: set_profiling(true)
  float ms = 0;
  KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()));
  detail::LayerTime& t = times_[index];
  if (forward) {
    t.forward_ms += ms;
    ++t.calls;
  } else {
    t.backward_ms += ms;
  }
}

// ---- the executor's calls: through the recorder, which runs, captures or replays them ----

void CudaExecutor::forward(bool train, std::uint64_t step) {
  recorder_.flush();
  last_train_ = train;
  ensure_plans(n_);  // before any capture: planning synchronizes
  recorder_.forward(train, step, n_);
}

void CudaExecutor::loss(const detail::LossOptions& o, bool train, std::int64_t tag) { recorder_.loss(o, train, tag); }

void CudaExecutor::backward(std::uint64_t) { recorder_.backward(); }  // the step forward wrote keys the masks

void CudaExecutor::update(std::span<const math::SgdHyper> hyper) { recorder_.update(hyper); }

void CudaExecutor::collect_stats(bool wait, std::vector<detail::StepStats>& out) {
  recorder_.flush();
  stats_.take(wait, out);
}

// Waiting for the stream waits for every step queued, captured or not.
void CudaExecutor::finish() {
  recorder_.flush();
  KILN_CUDA_CHECK(cudaStreamSynchronize(device_.stream()));
}

// ---- StepRunner: the parts of a step, queued on the stream (or captured) -----------------

void CudaExecutor::write_step(std::uint64_t step) { values_.write_step(step, device_.stream()); }

void CudaExecutor::write_hyper(std::span<const math::SgdHyper> hyper) { values_.write_hyper(hyper, device_.stream()); }

void CudaExecutor::enqueue_forward(bool train) {
  const StepContext ctx = step_context(train);
  // bf16/fp16: the weights convs and linears read, rounded from the fp32 masters (one pass
  // over the whole parameter block; the other parameters' copies go unread).
  if (dtype_params_) cast_from_f32(options_.dtype, params_, dtype_params_, param_floats_, device_.stream());
  for (LayerRun& run : runs_) {
    const auto index = static_cast<std::size_t>(run.layer->index);
    const FusedGroup* group = fusion_.group(run.layer->index);
    // A group runs in its batchnorm's slot; its activation's is empty.
    if (index == 0 || (group && group->act == run.layer->index)) continue;
    trace::Range range(run.fwd_name.c_str());
    LayerScope scope(run.fwd_name.c_str());
    if (profiling_) KILN_CUDA_CHECK(cudaEventRecord(layer_events_[index].first.get(), device_.stream()));
    if (group) {
      // With its convolution on cuDNN (--cudnn-fusion), the statistics and affine only.
      const bool cudnn = group->conv >= 0 && cudnn_group(group->conv);
      fused_bn_act_forward(run, runs_[static_cast<std::size_t>(group->act)], ctx, !cudnn);
    } else if (FusedConvPlans* p = cudnn_group(run.layer->index)) {
      fused_conv_forward(run, *p, ctx);
    } else {
      cuda_op(run.layer->op).forward(run, ctx);
    }
    if (profiling_) time_layer(index, true);
  }
}

void CudaExecutor::open_stats(std::int64_t tag) { stats_.open(tag, n_); }

void CudaExecutor::ship_stats() { stats_.ship(device_.stream()); }

void CudaExecutor::enqueue_loss(const detail::LossOptions& o, bool train) {
  trace::Range range("loss");
  LayerScope scope("the loss");
  const Layer& out = graph_.output();
  LayerRun& run = runs_[static_cast<std::size_t>(out.index)];
  const float scale = o.sum ? 1.0f : 1.0f / static_cast<float>(n_);
  // fp16: the loss's gradient scaled up by the loss scale before it is stored (LossScale).
  softmax_cross_entropy(options_.dtype, run.y, labels_, n_, static_cast<int>(out.shape.c), o.label_smoothing, scale,
                        train && scaler_ ? &scaler_->scale : nullptr, train ? run.dy : nullptr, stats_.loss_sum(),
                        stats_.correct(), device_.stream());
}

void CudaExecutor::enqueue_backward() {
  const StepContext ctx = step_context(last_train_);
  for (auto it = runs_.rbegin(); it != runs_.rend(); ++it) {
    LayerRun& run = *it;
    const auto index = static_cast<std::size_t>(run.layer->index);
    const FusedGroup* group = fusion_.group(run.layer->index);
    if (index == 0 || !run.dy || (group && group->act == run.layer->index)) continue;
    trace::Range range(run.bwd_name.c_str());
    LayerScope scope(run.bwd_name.c_str());
    if (profiling_) KILN_CUDA_CHECK(cudaEventRecord(layer_events_[index].first.get(), device_.stream()));
    if (group) fused_bn_act_backward(run, runs_[static_cast<std::size_t>(group->act)], ctx);
    else if (FusedConvPlans* p = cudnn_group(run.layer->index)) fused_conv_backward(run, *p, ctx);
    else cuda_op(run.layer->op).backward(run, ctx);
    if (profiling_) time_layer(index, false);
  }
  // bf16/fp16: the gradients of the weights in the dtype, widened for the optimizer.
  for (std::size_t p : in_dtype_) {
    if (!detail::gets_gradient(graph_, plan_, p)) continue;
    const std::int64_t o = param_offset_[p];
    cast_to_f32(options_.dtype, dtype_grads_ + o * size_of(options_.dtype), grads_ + o, graph_.params()[p].elements,
                device_.stream());
  }
  // The divergence guard's check of this step's gradients travels with its loss (the
  // recorder ships the block after backward); in fp16 an overflow at a loss scale above 1
  // marks the step skipped instead (loss_scale_check).
  if (last_train_) {
    flag_nonfinite(grads_, param_floats_, stats_.nonfinite(), device_.stream());
    if (scaler_) loss_scale_check(scaler_, stats_.nonfinite(), stats_.loss_scale(), device_.stream());
  }
}

FusedConvPlans* CudaExecutor::cudnn_group(int index) {
  const int g = group_of_conv_[static_cast<std::size_t>(index)];
  return g < 0 ? nullptr : fused_convs_.find(g, n_);
}

// The convolution of a group cuDNN runs: its input is the batchnorm's input, to which the
// prologue applies the batchnorm's affine (saved by the batchnorm's slot) and the activation.
void CudaExecutor::fused_conv_forward(LayerRun& conv, FusedConvPlans& p, const StepContext& ctx) {
  p.fwd->execute(ctx.cudnn);
  if (conv.layer->attrs.bias) bias_forward(ctx.dtype, conv.y, conv.params[1], ctx.dims(conv.layer->shape), ctx.stream);
}

// Backward-data as unfused (it reads no activation); the weight gradient with the prologue.
void CudaExecutor::fused_conv_backward(LayerRun& conv, FusedConvPlans& p, const StepContext& ctx) {
  const Layer& layer = *conv.layer;
  ConvPlans& plain = *convs_.find(layer.index, ctx.n);
  if (plain.bwd_data && first_dx(conv)) plain.bwd_data->execute(ctx.cudnn);  // never accumulates: the activation's sole reader
  if (p.wgrad && conv.grads[0]) p.wgrad->execute(ctx.cudnn);
  if (layer.attrs.bias && conv.grads[1]) bias_backward(ctx.dtype, conv.dy, ctx.dims(layer.shape), conv.grads[1], ctx.stream);
}

void CudaExecutor::enqueue_update() {
  trace::Range range("optimizer");
  LayerScope scope("the optimizer");
  auto params = graph_.params();
  for (std::size_t p = 0; p < params.size(); ++p) {
    if (!detail::gets_gradient(graph_, plan_, p)) continue;
    const std::int64_t o = param_offset_[p];
    // The hyperparameters this step's write_hyper put in device memory.
    sgd_update(params_ + o, momentum_ + o, grads_ + o, params[p].elements, {}, scaler_, device_.stream(), values_.hyper(p));
  }
  if (scaler_) loss_scale_advance(scaler_, detail::LossScale::kGrowthInterval, device_.stream());
}

void CudaExecutor::begin_capture() { captured_.begin(device_.stream()); }

std::uint64_t CudaExecutor::end_capture() {
  std::string why;
  const std::uint64_t id = captured_.end(device_.stream(), why);
  if (!id && !capture_notice_) {
    fmt::print(stderr, "kiln: could not capture a training step of batch {} into a CUDA graph ({}); it runs kernel by kernel\n",
               n_, why);
    capture_notice_ = true;
  }
  return id;
}

void CudaExecutor::launch(std::uint64_t graph) {
  trace::Range range("step (CUDA graph)");
  captured_.launch(graph, device_.stream());
}

void CudaExecutor::read_logits(std::span<float> out) const {
  recorder_.flush();
  const Layer& last = graph_.output();
  const std::size_t count = std::min(out.size(), static_cast<std::size_t>(n_ * last.shape.c));
  const void* logits = runs_[static_cast<std::size_t>(last.index)].y;
  if (options_.dtype == DType::f32) {
    KILN_CUDA_CHECK(cudaMemcpyAsync(out.data(), logits, count * 4, cudaMemcpyDeviceToHost, device_.stream()));
    KILN_CUDA_CHECK(cudaStreamSynchronize(device_.stream()));
    return;
  }
  std::vector<std::uint16_t> bits(count);  // evaluation only: not on a training step's path
  KILN_CUDA_CHECK(cudaMemcpyAsync(bits.data(), logits, count * 2, cudaMemcpyDeviceToHost, device_.stream()));
  KILN_CUDA_CHECK(cudaStreamSynchronize(device_.stream()));
  for (std::size_t i = 0; i < count; ++i)
    out[i] = options_.dtype == DType::f16 ? math::fp16_bits_to_float(bits[i]) : math::bf16_bits_to_float(bits[i]);
}

void CudaExecutor::lookahead_init() {
  recorder_.flush();
  KILN_CUDA_CHECK(cudaMemcpyAsync(ema_, params_, static_cast<std::size_t>(param_floats_) * 4, cudaMemcpyDeviceToDevice,
                                  device_.stream()));
}

void CudaExecutor::lookahead(float decay) {
  recorder_.flush();
  trace::Range range("lookahead");
  LayerScope scope("the lookahead average");
  lookahead_update(params_, ema_, param_floats_, decay, device_.stream());
}

void CudaExecutor::set_profiling(bool on) {
  recorder_.set_enabled(options_.cuda_graph && !on);  // profiling waits per layer: no capture
  profiling_ = on;
  times_.assign(runs_.size(), {});
}

std::vector<detail::LayerTime> CudaExecutor::layer_times() const {
  recorder_.flush();
  std::vector<detail::LayerTime> t = times_;
  for (std::size_t i = 0; i < runs_.size(); ++i) {
    t[i].detail = convs_.describe(static_cast<int>(i), batch_);
    // A fused group's time is its batchnorm's row; its activation's row is empty.
    if (const FusedGroup* g = fusion_.group(static_cast<int>(i))) {
      const bool cudnn = g->conv >= 0 && group_of_conv_[static_cast<std::size_t>(g->conv)] >= 0 &&
                         fused_convs_.has(group_of_conv_[static_cast<std::size_t>(g->conv)], batch_);
      const std::string& act = graph_.layers()[static_cast<std::size_t>(g->act)].name;
      const std::string& conv = cudnn ? graph_.layers()[static_cast<std::size_t>(g->conv)].name : act;
      t[i].detail = g->bn != static_cast<int>(i) ? fmt::format("fused into {}", cudnn ? conv : graph_.layers()[static_cast<std::size_t>(g->bn)].name)
                    : cudnn ? fmt::format("statistics for {}'s cuDNN prologue; backward fused with {}", conv, act)
                            : fmt::format("fused with {} (kiln kernel)", act);
    }
    if (const int g = group_of_conv_[i]; g >= 0 && fused_convs_.has(g, batch_)) t[i].detail = fused_convs_.describe(g, batch_);
  }
  return t;
}

}  // namespace kiln::cuda
