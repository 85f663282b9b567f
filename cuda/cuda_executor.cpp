// The CUDA executor: setup (plans, arena, bindings) and the host-side state around a step.
// The per-layer work of forward and backward is in cuda_layers.cpp.
#include "cuda/cuda_executor.hpp"

#include <algorithm>
#include <cstring>
#include <utility>
#include <fmt/format.h>

#include "cuda/kernels.hpp"
#include "graph/op_def.hpp"
#include "kiln/device.hpp"
#include "kiln/format.hpp"
#include "trace/trace.hpp"
#include "util/checked.hpp"

namespace kiln::cuda {

namespace {

constexpr std::int64_t kAlign = 256;
constexpr std::size_t kStatsSlots = 64;
constexpr std::size_t kStatsBytes = 32;  // double, unsigned long long, unsigned int, padding

// Offsets of the arena's regions, computed before anything is allocated.
struct ArenaLayout {
  std::int64_t total = 0;
  std::int64_t take(std::int64_t bytes) {
    std::int64_t at = total;
    total = detail::align_up(total + std::max<std::int64_t>(bytes, 0), kAlign);
    return at;
  }
};

bool is_conv_weight(const Graph& g, std::size_t p) {
  const Param& param = g.params()[p];
  return param.role == ParamRole::weight && g.layers()[static_cast<std::size_t>(param.layer)].op == OpKind::conv;
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

namespace {

// Runs before any member touches the device (the streams are members): a machine without a
// GPU or driver gets kiln's message, not the CUDA runtime's error from creating a stream.
const detail::CudaOptions& usable(const detail::CudaOptions& options) {
  if (options.dtype != DType::f32)
    throw DeviceError(fmt::format("the CUDA backend trains in fp32 only so far; {} is not implemented yet (use --dtype fp32)",
                                  to_string(options.dtype)));
  if (cuda_device_count() == 0)
    throw DeviceError(fmt::format("--device cuda: {}; train on the CPU with --device cpu", cuda_unavailable_reason()));
  return options;
}

}  // namespace

math::Dims4 CudaExecutor::dims(const Shape& s, std::int64_t n) const {
  return {n, s.c, s.h, s.w, options_.layout == Layout::nhwc && s.is_image()};
}

CudaExecutor::CudaExecutor(const Graph& graph, std::int64_t batch, const detail::CudaOptions& options)
    : graph_(graph),
      batch_(batch),
      options_(usable(options)),
      plan_(plan_memory(graph, batch, DType::f32, PlanMode::train, options.layout)) {
  KILN_CUDA_CHECK(cudaSetDevice(options.device));
  cudaDeviceProp prop{};
  KILN_CUDA_CHECK(cudaGetDeviceProperties(&prop, options.device));
  device_name_ = prop.name;
  KILN_CUDNN_CHECK(cudnnCreate(&cudnn_));
  KILN_CUDNN_CHECK(cudnnSetStream(cudnn_, stream_.get()));
  KILN_CUBLAS_CHECK(cublasCreate(&cublas_));
  KILN_CUBLAS_CHECK(cublasSetStream(cublas_, stream_.get()));

  auto layers = graph.layers();
  auto params = graph.params();
  const std::int64_t plane = graph.input_shape().elements();

  // 0. Fail early, before cuDNN sees tensors too large to describe, when the parameters and
  // activations alone exceed the device.
  std::int64_t param_bytes = 0;
  for (const Param& p : params) param_bytes += p.elements * 4;
  check_fits(4 * param_bytes + plan_.arena_bytes, 4 * param_bytes, 0);

  // 1. Convolution plans at the full batch: they decide the workspace.
  runs_.resize(layers.size());
  std::int64_t workspace = 0, scratch = 0;
  for (const Layer& layer : layers) {
    LayerRun& run = runs_[static_cast<std::size_t>(layer.index)];
    run.layer = &layer;
    run.out = dims(layer.shape, batch);
    for (int in : layer.inputs) run.in.push_back(dims(layers[static_cast<std::size_t>(in)].shape, batch));
    run.view = layer.op == OpKind::flatten && flatten_is_view(graph, layer, options.layout);
    run.fwd_name = layer.name + "/fwd";
    run.bwd_name = layer.name + "/bwd";
    if (layer.op != OpKind::conv) continue;
    ConvPlans& p = conv_plans(run, batch);
    for (auto* plan : {&p.fwd, &p.bwd_data, &p.bwd_filter})
      if (*plan) workspace = std::max(workspace, options.autotune ? (*plan)->max_workspace() : (*plan)->workspace());
    if (p.bwd_data && std::find(plan_.accumulate[static_cast<std::size_t>(layer.index)].begin(),
                                plan_.accumulate[static_cast<std::size_t>(layer.index)].end(), true) !=
                          plan_.accumulate[static_cast<std::size_t>(layer.index)].end())
      scratch = std::max(scratch, run.in[0].count() * 4);
  }
  workspace_bytes_ = workspace;

  // 2. The arena.
  param_offset_.resize(params.size());
  std::int64_t param_floats = 0;
  for (std::size_t p = 0; p < params.size(); ++p) param_offset_[p] = param_floats, param_floats += params[p].elements;
  std::int64_t bn_floats = 0;
  for (const Layer& layer : layers)
    if (layer.op == OpKind::batchnorm) bn_floats += 2 * layer.shape.c;
  const std::int64_t channels = graph.input_shape().c;
  ArenaLayout at;
  const std::int64_t o_params = at.take(param_floats * 4), o_grads = at.take(param_floats * 4),
                     o_momentum = at.take(param_floats * 4), o_ema = at.take(param_floats * 4),
                     o_act = at.take(plan_.arena_bytes), o_bn = at.take(bn_floats * 4),
                     o_scratch = at.take(scratch), o_work = at.take(workspace), o_labels = at.take(batch * 4),
                     o_loss = at.take(static_cast<std::int64_t>(kStatsBytes)), o_identity = at.take(batch * 8), o_norm = at.take(2 * channels * 4);
  std::array<std::int64_t, 2> o_img{}, o_lab{}, o_idx{}, o_aug{};
  for (int s = 0; s < 2; ++s) {
    o_img[s] = at.take(batch * plane);
    o_lab[s] = at.take(batch);
    o_idx[s] = at.take(batch * 8);
    o_aug[s] = at.take(batch * static_cast<std::int64_t>(sizeof(math::AugmentParams)));
  }
  check_fits(at.total, 4 * param_floats * 4, workspace);
  arena_ = DeviceBuffer(static_cast<std::size_t>(at.total));
  std::byte* base = arena_.data();
  params_ = reinterpret_cast<float*>(base + o_params);
  grads_ = reinterpret_cast<float*>(base + o_grads);
  momentum_ = reinterpret_cast<float*>(base + o_momentum);
  ema_ = reinterpret_cast<float*>(base + o_ema);
  param_floats_ = param_floats;
  activations_ = base + o_act;
  scratch_ = scratch ? reinterpret_cast<float*>(base + o_scratch) : nullptr;
  workspace_ = base + o_work;
  labels_ = reinterpret_cast<std::int32_t*>(base + o_labels);
  loss_sum_ = reinterpret_cast<double*>(base + o_loss);
  identity_ = reinterpret_cast<std::int64_t*>(base + o_identity);
  mean_ = reinterpret_cast<float*>(base + o_norm);
  inv_std_ = mean_ + channels;
  for (int s = 0; s < 2; ++s) {
    stage_images_[s] = base + o_img[s];
    stage_labels_[s] = base + o_lab[s];
    stage_indices_[s] = base + o_idx[s];
    stage_augment_[s] = base + o_aug[s];
  }
  KILN_CUDA_CHECK(cudaMemsetAsync(base, 0, static_cast<std::size_t>(at.total), stream_.get()));
  std::vector<std::int64_t> identity(static_cast<std::size_t>(batch));
  for (std::int64_t i = 0; i < batch; ++i) identity[static_cast<std::size_t>(i)] = i;
  KILN_CUDA_CHECK(cudaMemcpyAsync(identity_, identity.data(), identity.size() * 8, cudaMemcpyHostToDevice, stream_.get()));

  // 3. Bind every layer to its memory.
  auto activation = [&](int layer) -> float* {
    int b = plan_.activation[static_cast<std::size_t>(layer)];
    return reinterpret_cast<float*>(activations_ + plan_.buffers[static_cast<std::size_t>(b)].offset);
  };
  auto gradient = [&](int layer) -> float* {
    int b = plan_.gradient[static_cast<std::size_t>(layer)];
    return b < 0 ? nullptr : reinterpret_cast<float*>(activations_ + plan_.buffers[static_cast<std::size_t>(b)].offset);
  };
  float* bn_state = reinterpret_cast<float*>(base + o_bn);
  for (const Layer& layer : layers) {
    LayerRun& run = runs_[static_cast<std::size_t>(layer.index)];
    run.y = activation(layer.index);
    run.dy = gradient(layer.index);
    const auto& acc = plan_.accumulate[static_cast<std::size_t>(layer.index)];
    for (std::size_t slot = 0; slot < layer.inputs.size(); ++slot) {
      run.x.push_back(activation(layer.inputs[slot]));
      run.dx.push_back(gradient(layer.inputs[slot]));
      run.accumulate.push_back(slot < acc.size() && acc[slot]);
    }
    for (int p : layer.params) {
      run.params.push_back(params_ + param_offset_[static_cast<std::size_t>(p)]);
      run.grads.push_back(detail::gets_gradient(graph_, plan_, static_cast<std::size_t>(p))
                              ? grads_ + param_offset_[static_cast<std::size_t>(p)]
                              : nullptr);
    }
    if (layer.op == OpKind::batchnorm) {
      run.save_mean = bn_state;
      run.save_invstd = bn_state + layer.shape.c;
      bn_state += 2 * layer.shape.c;
    }
    for (auto& [n, p] : run.conv) {
      (void)n;
      bind_conv(run, p);
    }
  }
  if (options.autotune)
    for (auto& run : runs_)
      for (auto& [n, p] : run.conv) {
        (void)n;
        for (auto* plan : {&p.fwd, &p.bwd_data, &p.bwd_filter})
          if (*plan) (*plan)->autotune(cudnn_, stream_.get(), 3);
      }

  // 4. Host-side staging and statistics.
  const std::size_t slot_bytes = static_cast<std::size_t>(batch * plane + batch + batch * 8 +
                                                          batch * static_cast<std::int64_t>(sizeof(math::AugmentParams)));
  for (auto& slot : staging_) {
    slot.host = PinnedBuffer(slot_bytes);
    slot.images = slot.host.data();
    slot.labels = slot.images + batch * plane;
    slot.indices = slot.labels + batch;
    slot.augment = slot.indices + batch * 8;
  }
  stats_.resize(kStatsSlots);
  stats_host_ = PinnedBuffer(kStatsSlots * kStatsBytes);
  transform_host_ = PinnedBuffer(static_cast<std::size_t>(2 * channels * 4));
  for (std::size_t i = 0; i < layers.size(); ++i) layer_events_.emplace_back(Event(true), Event(true));
  times_.assign(layers.size(), {});
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
}

CudaExecutor::~CudaExecutor() {
  if (stream_.get()) cudaStreamSynchronize(stream_.get());
  if (cublas_) cublasDestroy(cublas_);
  if (cudnn_) cudnnDestroy(cudnn_);
}

ExecPlan CudaExecutor::plan_for(const BackendDescriptor& op, const std::string& key, std::int64_t limit, int candidates,
                               const std::string& what) {
  auto it = plan_cache_.find(key);
  if (it == plan_cache_.end()) it = plan_cache_.emplace(key, ExecPlan(cudnn_, op, limit, candidates, what)).first;
  return it->second.share();
}

void CudaExecutor::bind_conv(LayerRun& run, ConvPlans& p) {
  const std::int64_t uid = p.ops.x.uid;  // x, w, y, dx, dw, dy: uid + 0..5 (make_conv_ops)
  if (p.fwd) {
    std::int64_t u[] = {uid, uid + 1, uid + 2};
    void* ptr[] = {run.x[0], run.params[0], run.y};
    p.fwd->bind(u, ptr, workspace_);
  }
  if (p.bwd_data) {
    std::int64_t u[] = {uid + 3, uid + 1, uid + 5};
    void* ptr[] = {run.accumulate[0] ? scratch_ : run.dx[0], run.params[0], run.dy};
    p.bwd_data->bind(u, ptr, workspace_);
  }
  if (p.bwd_filter) {
    std::int64_t u[] = {uid, uid + 4, uid + 5};
    void* ptr[] = {run.x[0], run.grads[0], run.dy};
    p.bwd_filter->bind(u, ptr, workspace_);
  }
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

ConvPlans& CudaExecutor::conv_plans(LayerRun& run, std::int64_t n) {
  auto it = run.conv.find(n);
  if (it != run.conv.end()) return it->second;
  const Layer& layer = *run.layer;
  const Attrs& a = layer.attrs;
  const Shape& in = graph_.layers()[static_cast<std::size_t>(layer.inputs[0])].shape;
  ConvPlans& p = run.conv[n];
  std::string part;
  auto s = make_conv_ops(p.ops, {n, in.c, in.h, in.w}, {a.out, in.c / a.groups, a.kernel.h, a.kernel.w},
                         {n, layer.shape.c, layer.shape.h, layer.shape.w}, conv_geometry(a), options_.dtype, options_.layout,
                         /*uid_base=*/1, &part);  // uids are per operation graph: the same for every layer, so plans can be shared
  if (!s.ok())
    throw DeviceError(fmt::format("layer '{}': cuDNN rejects its {} descriptor (batch {}, {}, {}): {}", layer.name, part, n,
                                  to_string(options_.dtype), to_string(options_.layout), s.message));
  // A plan made after the arena exists (a short last batch) must fit the workspace there is.
  const std::int64_t limit = workspace_ ? workspace_bytes_ : options_.workspace_limit;
  const int candidates = options_.autotune && !workspace_ ? 4 : 1;
  const std::string where = fmt::format("layer '{}' ({}, batch {}, {}, {})", layer.name, detail::describe_layer(layer, true), n,
                                        to_string(options_.dtype), to_string(options_.layout));
  // Layers of the same shape share one cuDNN plan (resnet20 repeats its convolutions).
  const std::string key = fmt::format("{}x{}x{}x{}>{}x{}x{}x{} k{}x{} s{}x{} d{}x{} p{},{},{},{} g{} {} {}", n, in.c, in.h, in.w,
                                      layer.shape.c, layer.shape.h, layer.shape.w, a.groups, a.kernel.h, a.kernel.w,
                                      a.stride->h, a.stride->w, a.dilation.h, a.dilation.w, a.pad.top, a.pad.bottom, a.pad.left,
                                      a.pad.right, a.groups, to_string(options_.dtype), to_string(options_.layout));
  p.fwd.emplace(plan_for(p.ops.fwd, "fwd " + key, limit, candidates, "the forward convolution of " + where));
  if (plan_.gradient[static_cast<std::size_t>(layer.inputs[0])] >= 0)
    p.bwd_data.emplace(plan_for(p.ops.bwd_data, "dgrad " + key, limit, candidates, "the backward-data convolution of " + where));
  if (graph_.params()[static_cast<std::size_t>(layer.params[0])].trainable && plan_.gradient[static_cast<std::size_t>(layer.index)] >= 0)
    p.bwd_filter.emplace(
        plan_for(p.ops.bwd_filter, "wgrad " + key, limit, candidates, "the backward-filter convolution of " + where));
  if (workspace_) bind_conv(run, p);  // made after setup (a short last batch): bind now
  return p;
}

void CudaExecutor::stage(const detail::HostBatch& batch, const detail::InputTransform& t) {
  trace::Range range("data/stage");
  LayerScope scope("data staging");
  n_ = batch.n;
  const Shape in = graph_.input_shape();
  const std::int64_t plane = in.elements();
  const std::size_t channels = static_cast<std::size_t>(in.c);

  // Normalization constants change rarely: upload only when they do.
  std::vector<float> transform(t.mean);
  transform.insert(transform.end(), t.inv_std.begin(), t.inv_std.end());
  if (transform != transform_cache_) {
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));  // the pinned copy may still be read
    std::memcpy(transform_host_.data(), transform.data(), 2 * channels * 4);
    KILN_CUDA_CHECK(cudaMemcpyAsync(mean_, transform_host_.data(), 2 * channels * 4, cudaMemcpyHostToDevice, stream_.get()));
    transform_cache_ = transform;
  }

  const int k = next_slot_;
  next_slot_ ^= 1;
  StagingSlot& slot = staging_[static_cast<std::size_t>(k)];
  // The pinned slot was last read by a copy issued two batches ago: normally long done.
  KILN_CUDA_CHECK(cudaEventSynchronize(slot.copied.get()));
  auto resident = batch.dataset ? resident_.find(batch.dataset) : resident_.end();
  const bool gather = resident != resident_.end() && batch.indices;
  const std::size_t aug_bytes = static_cast<std::size_t>(n_) * sizeof(math::AugmentParams);
  if (batch.augment) std::memcpy(slot.augment, batch.augment, aug_bytes);
  // The device slot may still be read by the staging kernel of two batches ago.
  KILN_CUDA_CHECK(cudaStreamWaitEvent(copy_stream_.get(), slot.consumed.get(), 0));
  if (gather) {
    std::memcpy(slot.indices, batch.indices, static_cast<std::size_t>(n_) * 8);
    KILN_CUDA_CHECK(cudaMemcpyAsync(stage_indices_[k], slot.indices, static_cast<std::size_t>(n_) * 8, cudaMemcpyHostToDevice,
                                    copy_stream_.get()));
  } else {
    std::memcpy(slot.images, batch.images, static_cast<std::size_t>(n_ * plane));
    std::memcpy(slot.labels, batch.labels, static_cast<std::size_t>(n_));
    KILN_CUDA_CHECK(cudaMemcpyAsync(stage_images_[k], slot.images, static_cast<std::size_t>(n_ * plane), cudaMemcpyHostToDevice,
                                    copy_stream_.get()));
    KILN_CUDA_CHECK(
        cudaMemcpyAsync(stage_labels_[k], slot.labels, static_cast<std::size_t>(n_), cudaMemcpyHostToDevice, copy_stream_.get()));
  }
  if (batch.augment)
    KILN_CUDA_CHECK(cudaMemcpyAsync(stage_augment_[k], slot.augment, aug_bytes, cudaMemcpyHostToDevice, copy_stream_.get()));
  KILN_CUDA_CHECK(cudaEventRecord(slot.copied.get(), copy_stream_.get()));
  KILN_CUDA_CHECK(cudaStreamWaitEvent(stream_.get(), slot.copied.get(), 0));

  const auto* images = gather ? reinterpret_cast<const std::uint8_t*>(resident->second.images.data())
                              : reinterpret_cast<const std::uint8_t*>(stage_images_[k]);
  const auto* labels = gather ? reinterpret_cast<const std::uint8_t*>(resident->second.labels.data())
                              : reinterpret_cast<const std::uint8_t*>(stage_labels_[k]);
  const auto* indices = gather ? reinterpret_cast<const std::int64_t*>(stage_indices_[k]) : identity_;
  const auto* augment = batch.augment ? reinterpret_cast<const math::AugmentParams*>(stage_augment_[k]) : nullptr;
  stage_batch(images, indices, augment, t.pad, mean_, inv_std_, reinterpret_cast<float*>(runs_[0].y), dims(in, n_),
              stream_.get());
  gather_labels(labels, indices, n_, labels_, stream_.get());
  KILN_CUDA_CHECK(cudaEventRecord(slot.consumed.get(), stream_.get()));
}

bool CudaExecutor::make_resident(const Dataset& data) {
  if (options_.pipeline == detail::CudaOptions::Pipeline::stream) return false;
  if (resident_.count(&data)) return true;
  std::size_t free_bytes = 0, total_bytes = 0;
  KILN_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const std::size_t bytes = data.images.size() + data.labels.size();
  // Leave most of the device to training; streaming is the fallback.
  if (bytes > free_bytes / 2) {
    if (options_.pipeline == detail::CudaOptions::Pipeline::resident)
      throw DeviceError(fmt::format("--pipeline resident: the dataset ({}) does not fit in half of the free device memory ({})",
                                    format_bytes(static_cast<std::int64_t>(bytes)), format_bytes(static_cast<std::int64_t>(free_bytes))));
    return false;
  }
  Resident r{DeviceBuffer(data.images.size()), DeviceBuffer(data.labels.size())};
  KILN_CUDA_CHECK(cudaMemcpy(r.images.data(), data.images.data(), data.images.size(), cudaMemcpyHostToDevice));
  KILN_CUDA_CHECK(cudaMemcpy(r.labels.data(), data.labels.data(), data.labels.size(), cudaMemcpyHostToDevice));
  resident_.emplace(&data, std::move(r));
  return true;
}

void CudaExecutor::loss(const detail::LossOptions& o, bool train, std::int64_t tag) {
  trace::Range range("loss");
  LayerScope scope("the loss");
  const Layer& out = graph_.output();
  LayerRun& run = runs_[static_cast<std::size_t>(out.index)];
  const float scale = o.sum ? 1.0f : 1.0f / static_cast<float>(n_);
  auto* correct = reinterpret_cast<unsigned long long*>(loss_sum_ + 1);
  softmax_cross_entropy(run.y, labels_, n_, static_cast<int>(out.shape.c), o.label_smoothing, scale, train ? run.dy : nullptr,
                        loss_sum_, correct, stream_.get());
  if (stats_[stats_head_ % kStatsSlots].pending) collect(true);  // more than 64 unread steps
  StatsSlot& slot = stats_[stats_head_ % kStatsSlots];
  slot.tag = tag;
  slot.count = n_;
  // In training the block travels after backward, with the gradient check's flag.
  copy_after_backward_ = train;
  if (!train) ship_stats();
}

void CudaExecutor::ship_stats() {
  // Copy the block to its pinned slot, then clear it; it is read when the event fires.
  StatsSlot& slot = stats_[stats_head_ % kStatsSlots];
  std::byte* host = stats_host_.data() + (stats_head_ % kStatsSlots) * kStatsBytes;
  KILN_CUDA_CHECK(cudaMemcpyAsync(host, loss_sum_, kStatsBytes, cudaMemcpyDeviceToHost, stream_.get()));
  KILN_CUDA_CHECK(cudaEventRecord(slot.ready.get(), stream_.get()));
  KILN_CUDA_CHECK(cudaMemsetAsync(loss_sum_, 0, kStatsBytes, stream_.get()));
  slot.pending = true;
  ++stats_head_;
}

std::vector<detail::StepStats> CudaExecutor::take_stats(bool wait) {
  collect(wait);
  return std::exchange(collected_, {});
}

void CudaExecutor::collect(bool wait) {
  while (stats_tail_ < stats_head_) {
    StatsSlot& slot = stats_[stats_tail_ % kStatsSlots];
    if (wait) {
      KILN_CUDA_CHECK(cudaEventSynchronize(slot.ready.get()));
    } else {
      cudaError_t e = cudaEventQuery(slot.ready.get());
      if (e == cudaErrorNotReady) break;
      KILN_CUDA_CHECK(e);
    }
    const std::byte* host = stats_host_.data() + (stats_tail_ % kStatsSlots) * kStatsBytes;
    double loss = 0;
    unsigned long long correct = 0;
    unsigned int nonfinite = 0;
    std::memcpy(&loss, host, 8);
    std::memcpy(&correct, host + 8, 8);
    std::memcpy(&nonfinite, host + 16, 4);
    collected_.push_back({slot.tag, loss, static_cast<std::int64_t>(correct), slot.count, nonfinite != 0});
    slot.pending = false;
    ++stats_tail_;
  }
}

void CudaExecutor::update(std::span<const math::SgdHyper> hyper) {
  trace::Range range("optimizer");
  LayerScope scope("the optimizer");
  auto params = graph_.params();
  for (std::size_t p = 0; p < params.size(); ++p) {
    if (!detail::gets_gradient(graph_, plan_, p)) continue;
    const std::int64_t o = param_offset_[p];
    sgd_update(params_ + o, momentum_ + o, grads_ + o, params[p].elements, hyper[p], stream_.get());
  }
}

void CudaExecutor::read_logits(std::span<float> out) const {
  const Layer& last = graph_.output();
  const std::size_t count = std::min(out.size(), static_cast<std::size_t>(n_ * last.shape.c));
  KILN_CUDA_CHECK(cudaMemcpyAsync(out.data(), runs_[static_cast<std::size_t>(last.index)].y, count * 4, cudaMemcpyDeviceToHost,
                                  stream_.get()));
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
}

void CudaExecutor::copy_param(std::size_t index, std::span<float> out, const float* base) const {
  const Param& p = graph_.params()[index];
  std::vector<float> host(static_cast<std::size_t>(p.elements));
  KILN_CUDA_CHECK(cudaMemcpyAsync(host.data(), base + param_offset_[index], host.size() * 4, cudaMemcpyDeviceToHost, stream_.get()));
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  if (options_.layout == Layout::nhwc && is_conv_weight(graph_, index)) {
    std::vector<float> kcrs(host.size());
    krsc_to_kcrs(host.data(), kcrs.data(), p.dims);
    host.swap(kcrs);
  }
  std::copy_n(host.begin(), std::min(host.size(), out.size()), out.begin());
}

void CudaExecutor::upload_param(std::size_t index, std::span<const float> in, float* base) {
  const Param& p = graph_.params()[index];
  std::vector<float> host(static_cast<std::size_t>(p.elements), 0.0f);
  std::copy_n(in.begin(), std::min(host.size(), in.size()), host.begin());
  if (options_.layout == Layout::nhwc && is_conv_weight(graph_, index)) {
    std::vector<float> krsc(host.size());
    kcrs_to_krsc(host.data(), krsc.data(), p.dims);
    host.swap(krsc);
  }
  KILN_CUDA_CHECK(cudaMemcpyAsync(base + param_offset_[index], host.data(), host.size() * 4, cudaMemcpyHostToDevice, stream_.get()));
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
}

void CudaExecutor::read_param(std::size_t i, std::span<float> out) const { copy_param(i, out, params_); }
void CudaExecutor::write_param(std::size_t i, std::span<const float> in) { upload_param(i, in, params_); }
void CudaExecutor::read_momentum(std::size_t i, std::span<float> out) const { copy_param(i, out, momentum_); }
void CudaExecutor::write_momentum(std::size_t i, std::span<const float> in) { upload_param(i, in, momentum_); }
void CudaExecutor::read_grad(std::size_t i, std::span<float> out) const { copy_param(i, out, grads_); }

void CudaExecutor::lookahead_init() {
  KILN_CUDA_CHECK(cudaMemcpyAsync(ema_, params_, static_cast<std::size_t>(param_floats_) * 4, cudaMemcpyDeviceToDevice,
                                  stream_.get()));
}

void CudaExecutor::lookahead(float decay) {
  trace::Range range("lookahead");
  LayerScope scope("the lookahead average");
  lookahead_update(params_, ema_, param_floats_, decay, stream_.get());
}

void CudaExecutor::read_ema(std::size_t i, std::span<float> out) const { copy_param(i, out, ema_); }
void CudaExecutor::write_ema(std::size_t i, std::span<const float> in) { upload_param(i, in, ema_); }

void CudaExecutor::set_profiling(bool on) {
  profiling_ = on;
  times_.assign(runs_.size(), {});
}

std::vector<detail::LayerTime> CudaExecutor::layer_times() const {
  std::vector<detail::LayerTime> t = times_;
  for (std::size_t i = 0; i < runs_.size(); ++i) {
    std::string engines;
    for (const auto& [n, p] : runs_[i].conv) {
      if (n != batch_) continue;
      if (p.fwd) engines += "fwd " + p.fwd->describe();
      if (p.bwd_data) engines += "; dgrad " + p.bwd_data->describe();
      if (p.bwd_filter) engines += "; wgrad " + p.bwd_filter->describe();
    }
    t[i].detail = engines;
  }
  return t;
}

std::string CudaExecutor::describe() const {
  return fmt::format("cuda, {}, fp32, {}", device_name_, to_string(options_.layout));
}

}  // namespace kiln::cuda

namespace kiln::detail {

std::unique_ptr<Executor> make_cuda_executor(const Graph& graph, std::int64_t batch, const CudaOptions& options) {
  return std::make_unique<cuda::CudaExecutor>(graph, batch, options);
}

}  // namespace kiln::detail
