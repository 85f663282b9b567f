// The CUDA executor's step: staging, forward, loss, backward and the optimizer, each layer
// through its op table entry, in the order and with the memory the plan gives. Nothing here
// allocates or waits for the device, except while profiling (an event wait per layer) and
// the bounded back-pressure of Staging and StatsRing.
#include <fmt/format.h>
#include <vector>

#include "cuda/cuda_executor.hpp"
#include "cuda/kernels.hpp"
#include "math/half.hpp"
#include "trace/trace.hpp"

namespace kiln::cuda {

StepContext CudaExecutor::step_context(bool train, std::uint64_t step) {
  StepContext ctx;
  ctx.graph = &graph_;
  ctx.layout = options_.layout;
  ctx.dtype = options_.dtype;
  ctx.n = n_;
  ctx.train = train;
  ctx.step = step;
  ctx.stream = device_.stream();
  ctx.cudnn = device_.cudnn();
  ctx.cublas = device_.cublas();
  ctx.convs = &convs_;
  ctx.scratch = scratch_;
  return ctx;
}

void CudaExecutor::stage(const detail::HostBatch& batch, const detail::InputTransform& transform) {
  LayerScope scope("data staging");
  n_ = batch.n;
  const Shape in = graph_.input_shape();
  const math::Dims4 dims{n_, in.c, in.h, in.w, options_.layout == Layout::nhwc && in.is_image()};
  staging_.stage(batch, transform, runs_[0].y, options_.dtype, dims, labels_, device_.stream());
}

std::uint64_t CudaExecutor::make_resident(const Dataset& data) { return staging_.make_resident(data); }

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

void CudaExecutor::forward(bool train, std::uint64_t step) {
  last_train_ = train;
  ensure_plans(n_);
  const StepContext ctx = step_context(train, step);
  // bf16/fp16: the weights convs and linears read, rounded from the fp32 masters (one pass
  // over the whole parameter block; the other parameters' copies go unread).
  if (dtype_params_) cast_from_f32(options_.dtype, params_, dtype_params_, param_floats_, device_.stream());
  for (LayerRun& run : runs_) {
    const auto index = static_cast<std::size_t>(run.layer->index);
    if (index == 0) continue;
    trace::Range range(run.fwd_name.c_str());
    LayerScope scope(run.fwd_name.c_str());
    if (profiling_) KILN_CUDA_CHECK(cudaEventRecord(layer_events_[index].first.get(), device_.stream()));
    cuda_op(run.layer->op).forward(run, ctx);
    if (profiling_) time_layer(index, true);
  }
}

void CudaExecutor::loss(const detail::LossOptions& o, bool train, std::int64_t tag) {
  trace::Range range("loss");
  LayerScope scope("the loss");
  const Layer& out = graph_.output();
  LayerRun& run = runs_[static_cast<std::size_t>(out.index)];
  const float scale = o.sum ? 1.0f : 1.0f / static_cast<float>(n_);
  // fp16: the loss's gradient scaled up by the loss scale before it is stored (LossScale).
  softmax_cross_entropy(options_.dtype, run.y, labels_, n_, static_cast<int>(out.shape.c), o.label_smoothing, scale,
                        train && scaler_ ? &scaler_->scale : nullptr, train ? run.dy : nullptr, stats_.loss_sum(),
                        stats_.correct(), device_.stream());
  stats_.open(tag, n_);
  // In training the block travels after backward, with the gradient check's flag.
  ship_after_backward_ = train;
  if (!train) stats_.ship(device_.stream());
}

void CudaExecutor::backward(std::uint64_t step) {
  const StepContext ctx = step_context(last_train_, step);
  for (auto it = runs_.rbegin(); it != runs_.rend(); ++it) {
    LayerRun& run = *it;
    const auto index = static_cast<std::size_t>(run.layer->index);
    if (index == 0 || !run.dy) continue;
    trace::Range range(run.bwd_name.c_str());
    LayerScope scope(run.bwd_name.c_str());
    if (profiling_) KILN_CUDA_CHECK(cudaEventRecord(layer_events_[index].first.get(), device_.stream()));
    cuda_op(run.layer->op).backward(run, ctx);
    if (profiling_) time_layer(index, false);
  }
  // bf16/fp16: the gradients of the weights in the dtype, widened for the optimizer.
  for (std::size_t p : in_dtype_) {
    if (!detail::gets_gradient(graph_, plan_, p)) continue;
    const std::int64_t o = param_offset_[p];
    cast_to_f32(options_.dtype, dtype_grads_ + o * size_of(options_.dtype), grads_ + o, graph_.params()[p].elements,
                device_.stream());
  }
  // The divergence guard's check of this step's gradients travels with its loss; in fp16 an
  // overflow at a loss scale above 1 marks the step skipped instead (loss_scale_check).
  if (ship_after_backward_) {
    flag_nonfinite(grads_, param_floats_, stats_.nonfinite(), device_.stream());
    if (scaler_) loss_scale_check(scaler_, stats_.nonfinite(), stats_.loss_scale(), device_.stream());
    stats_.ship(device_.stream());
    ship_after_backward_ = false;
  }
}

void CudaExecutor::collect_stats(bool wait, std::vector<detail::StepStats>& out) { stats_.take(wait, out); }

// The update is the last work a step queues on the stream: waiting for the stream waits
// for it (the statistics' event is recorded after backward, before the update).
void CudaExecutor::finish() { KILN_CUDA_CHECK(cudaStreamSynchronize(device_.stream())); }

void CudaExecutor::update(std::span<const math::SgdHyper> hyper) {
  trace::Range range("optimizer");
  LayerScope scope("the optimizer");
  auto params = graph_.params();
  for (std::size_t p = 0; p < params.size(); ++p) {
    if (!detail::gets_gradient(graph_, plan_, p)) continue;
    const std::int64_t o = param_offset_[p];
    sgd_update(params_ + o, momentum_ + o, grads_ + o, params[p].elements, hyper[p], scaler_, device_.stream());
  }
  if (scaler_) loss_scale_advance(scaler_, detail::LossScale::kGrowthInterval, device_.stream());
}

void CudaExecutor::read_logits(std::span<float> out) const {
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
  KILN_CUDA_CHECK(cudaMemcpyAsync(ema_, params_, static_cast<std::size_t>(param_floats_) * 4, cudaMemcpyDeviceToDevice,
                                  device_.stream()));
}

void CudaExecutor::lookahead(float decay) {
  trace::Range range("lookahead");
  LayerScope scope("the lookahead average");
  lookahead_update(params_, ema_, param_floats_, decay, device_.stream());
}

void CudaExecutor::set_profiling(bool on) {
  profiling_ = on;
  times_.assign(runs_.size(), {});
}

std::vector<detail::LayerTime> CudaExecutor::layer_times() const {
  std::vector<detail::LayerTime> t = times_;
  for (std::size_t i = 0; i < runs_.size(); ++i) t[i].detail = convs_.describe(static_cast<int>(i), batch_);
  return t;
}

}  // namespace kiln::cuda
