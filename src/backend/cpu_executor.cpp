// The CPU backend: one allocation laid out by the memory plan (parameters, gradients,
// momentum, averages, activations, state, workspace, staging), and each layer's kernels
// from the CPU op table. fp16 and bf16 plans are emulated in fp32 (cpu_ops.hpp), with a
// rounded copy of the conv and linear weights (one more block) and, in fp16, a dynamic loss
// scale.
// Nothing is allocated during a step.
#include <algorithm>
#include <cblas.h>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <utility>
#include <fmt/format.h>

#include "backend/cpu_layer.hpp"
#include "backend/cpu_ops.hpp"
#include "backend/executor.hpp"
#include "math/loss.hpp"
#include "math/loss_scale.hpp"
#include "math/rng.hpp"
#include "trace/trace.hpp"

namespace kiln::detail {

namespace {

using Clock = std::chrono::steady_clock;

class CpuExecutor final : public Executor {
 public:
  CpuExecutor(const Graph& graph, std::int64_t batch, int threads, Layout layout, CpuConv cpu_conv, DType dtype)
      : graph_(graph),
        batch_(batch),
        threads_(std::max(1, threads)),
        layout_(layout),
        cpu_conv_(cpu_conv),
        dtype_(dtype),
        plan_(plan_memory(graph, Target{.backend = Backend::cpu, .batch = batch, .dtype = dtype, .layout = layout})) {
    // OpenBLAS single-threaded: its pthread pool and OpenMP's would compete for the same cores
    // (up to 10x slower on a loaded machine); gemm() splits products over OpenMP threads.
    openblas_set_num_threads(1);
    auto layers = graph.layers();

    // One allocation, laid out by the memory plan; zeroed, so unwritten gradients and the
    // padding between parameters stay 0.
    memory_ = Memory(static_cast<std::size_t>(plan_.total_bytes));
    auto block = [&](const char* name) { return memory_.floats(plan_.block(name)->offset); };
    params_ = block("parameters");
    grads_ = block("gradients");
    momentum_ = block("momentum");
    ema_ = block("averages");
    arena_ = block("activations");
    float* state = block("state");
    float* workspace = block("workspace");
    labels_ = reinterpret_cast<int*>(block("staging"));
    param_floats_ = plan_.param_block_bytes / 4;
    for (std::int64_t offset : plan_.param_offsets) param_offset_.push_back(offset / 4);
    // fp16/bf16: the parameters the plan reads in its dtype get a rounded copy of their own,
    // refreshed from the fp32 masters before each forward (cpu_ops.hpp).
    for (const Layer& layer : layers)
      if (dtype_ != DType::f32 && params_in_dtype(layer))
        for (int p : layer.params) in_dtype_.push_back(static_cast<std::size_t>(p));
    if (!in_dtype_.empty()) copies_ = block("rounded weights");
    if (dtype_ == DType::f16) loss_scale_ = {LossScale::kInitial, 0};

    cpu_.resize(layers.size());
    for (const Layer& layer : layers) {
      auto i = static_cast<std::size_t>(layer.index);
      CpuLayer& l = cpu_[i];
      l.layer = &layer;
      l.layers = layers;
      l.threads = threads_;
      l.layout = layout_;
      l.conv = cpu_conv_;
      l.dtype = dtype_;
      l.y = activation(layer.index);
      l.dy = gradient(layer.index);
      for (std::size_t slot = 0; slot < layer.inputs.size(); ++slot) {
        int in = layer.inputs[slot];
        l.x.push_back(activation(in));
        l.dx.push_back(gradient(in));
        l.accumulate.push_back(plan_.accumulate[i].empty() ? false : static_cast<bool>(plan_.accumulate[i][slot]));
      }
      for (int p : layer.params) {
        float* master = params_ + param_offset_[static_cast<std::size_t>(p)];
        l.params.push_back(!copies_ || !params_in_dtype(layer) ? master : copies_ + param_offset_[static_cast<std::size_t>(p)]);
        l.param_elements.push_back(graph.params()[static_cast<std::size_t>(p)].elements);
        l.grads.push_back(gets_gradient(graph, plan_, static_cast<std::size_t>(p))
                              ? grads_ + param_offset_[static_cast<std::size_t>(p)]
                              : nullptr);
      }
      l.state = plan_.state_offsets[i] < 0 ? nullptr : state + plan_.state_offsets[i] / 4;
      l.workspace = plan_.block("workspace")->bytes ? workspace : nullptr;
      l.workspace_floats = plan_.block("workspace")->bytes / 4;
    }
    for (const Layer& layer : layers) names_.push_back({layer.name + "/fwd", layer.name + "/bwd"});
  }

  const Graph& graph() const override { return graph_; }
  std::int64_t capacity() const override { return batch_; }
  const MemoryPlan& memory() const override { return plan_; }

  void stage(const HostBatch& batch, const InputTransform& t) override {
    trace::Range range("data/stage");
    n_ = batch.n;
    const Shape in = graph_.input_shape();
    const int C = static_cast<int>(in.c), H = static_cast<int>(in.h), W = static_cast<int>(in.w);
    const std::int64_t plane = static_cast<std::int64_t>(C) * H * W;
    float* x = activation(0);
    const bool nhwc = layout_ == Layout::nhwc && in.is_image();
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (std::int64_t i = 0; i < n_; ++i) {
      const std::uint8_t* image = batch.images + i * plane;
      math::AugmentParams a = batch.augment ? batch.augment[i] : math::AugmentParams{};
      float* out = x + i * plane;
      for (int c = 0; c < C; ++c)
        for (int yy = 0; yy < H; ++yy)
          for (int xx = 0; xx < W; ++xx)
            out[nhwc ? (yy * W + xx) * C + c : (c * H + yy) * W + xx] = math::augmented_pixel(image, H, W, c, yy, xx, a, t.pad, t.mean[static_cast<std::size_t>(c)],
                                                               t.inv_std[static_cast<std::size_t>(c)]);
    }
    std::copy(batch.labels, batch.labels + n_, labels_);
    round_to_dtype(dtype_, x, n_ * plane, threads_);
  }

  void forward(bool train, std::uint64_t step) override {
    for (std::size_t p : in_dtype_) {
      const std::int64_t at = param_offset_[p], count = graph_.params()[p].elements;
      std::copy_n(params_ + at, count, copies_ + at);
      round_to_dtype(dtype_, copies_ + at, count, threads_);
    }
    for (CpuLayer& l : cpu_) {
      if (l.layer->index == 0) continue;
      trace::Range range(names_[static_cast<std::size_t>(l.layer->index)].fwd.c_str());
      l.n = n_;
      l.train = train;
      l.dropout_key = math::stream_key(step, math::kStreamDropout, static_cast<std::uint64_t>(l.layer->index));
      auto t0 = profiling_ ? Clock::now() : Clock::time_point{};
      run_forward(l);
      if (profiling_) {
        auto& t = times_[static_cast<std::size_t>(l.layer->index)];
        t.forward_ms += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        ++t.calls;
      }
    }
  }

  void loss(const LossOptions& o, bool train, std::int64_t tag) override {
    trace::Range range("loss");
    const Layer& out = graph_.output();
    const int K = static_cast<int>(out.shape.c);
    const float* logits = activation(out.index);
    float* grad = train ? gradient(out.index) : nullptr;
    // fp16: the loss's gradient scaled up before it is stored in fp16 (see LossScale).
    const float scale = (o.sum ? 1.0f : 1.0f / static_cast<float>(n_)) * (train ? loss_scale_.scale : 1.0f);
    double loss = 0;
    std::int64_t correct = 0;
    for (std::int64_t i = 0; i < n_; ++i) {
      auto s = math::softmax_cross_entropy(logits + i * K, K, labels_[i], o.label_smoothing, scale,
                                           grad ? grad + i * K : nullptr);
      loss += s.loss;
      correct += s.correct ? 1 : 0;
    }
    if (grad) round_to_dtype(dtype_, grad, n_ * K, threads_);
    stats_.push_back({.tag = tag, .loss_sum = loss, .correct = correct, .count = n_, .loss_scale = loss_scale_.scale});
  }

  void backward(std::uint64_t step) override {
    for (auto it = cpu_.rbegin(); it != cpu_.rend(); ++it) {
      CpuLayer& l = *it;
      const Layer& layer = *l.layer;
      if (layer.index == 0 || !l.dy) continue;
      trace::Range range(names_[static_cast<std::size_t>(layer.index)].bwd.c_str());
      l.dropout_key = math::stream_key(step, math::kStreamDropout, static_cast<std::uint64_t>(layer.index));
      auto t0 = profiling_ ? Clock::now() : Clock::time_point{};
      run_backward(l);
      if (profiling_)
        times_[static_cast<std::size_t>(layer.index)].backward_ms +=
            std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    }
    // The divergence guard: one pass over the gradients, noted with this step's loss.
    bool bad = false;
#pragma omp parallel for num_threads(threads_) schedule(static) reduction(|| : bad)
    for (std::int64_t i = 0; i < param_floats_; ++i) bad = bad || !std::isfinite(grads_[i]);
    // fp16: gradients that overflowed at the loss scale skip the update (update() halves the
    // scale); at a scale of 1 or less they overflow unscaled, and that is a divergence.
    skip_update_ = dtype_ == DType::f16 && math::loss_scale_skips(bad, loss_scale_.scale);
    if (!stats_.empty()) {
      stats_.back().nonfinite_grad = bad && !skip_update_;
      stats_.back().skipped = skip_update_;
    }
  }

  void update(std::span<const math::SgdHyper> hyper) override {
    trace::Range range("optimizer");
    const bool skipped = skip_update_;
    skip_update_ = false;
    const float unscale = 1.0f / loss_scale_.scale;  // this step's scale, a power of two: exact
    if (dtype_ == DType::f16)
      math::loss_scale_advance(loss_scale_.scale, loss_scale_.good_steps, skipped, LossScale::kGrowthInterval);
    if (skipped) return;
    auto params = graph_.params();
    for (std::size_t p = 0; p < params.size(); ++p) {
      if (!gets_gradient(graph_, plan_, p)) continue;
      const math::SgdHyper h = hyper[p];
      float* w = params_ + param_offset_[p];
      float* m = momentum_ + param_offset_[p];
      const float* g = grads_ + param_offset_[p];
      const std::int64_t count = params[p].elements;
      // fp16: the gradients unscaled on the way (times a power of two: exact); at scale 1 the
      // same operations as fp32's.
      if (unscale == 1.0f) {
#pragma omp parallel for num_threads(threads_) schedule(static) if (count > 4096)
        for (std::int64_t e = 0; e < count; ++e) math::sgd_update(w[e], m[e], g[e], h);
      } else {
#pragma omp parallel for num_threads(threads_) schedule(static) if (count > 4096)
        for (std::int64_t e = 0; e < count; ++e) math::sgd_update(w[e], m[e], g[e] * unscale, h);
      }
    }
  }

  void collect_stats(bool, std::vector<StepStats>& out) override {
    out.insert(out.end(), stats_.begin(), stats_.end());
    stats_.clear();  // keeps its capacity: loss() appends without allocating
  }

  void read_logits(std::span<float> out) const override {
    const Layer& last = graph_.output();
    const float* logits = activation(last.index);
    std::copy_n(logits, std::min<std::size_t>(out.size(), static_cast<std::size_t>(n_ * last.shape.c)), out.begin());
  }

  void read_param(std::size_t i, std::span<float> out) const override { copy_out(params_, i, out); }
  void write_param(std::size_t i, std::span<const float> in) override { copy_in(params_, i, in); }
  void read_momentum(std::size_t i, std::span<float> out) const override { copy_out(momentum_, i, out); }
  void write_momentum(std::size_t i, std::span<const float> in) override { copy_in(momentum_, i, in); }
  void read_grad(std::size_t i, std::span<float> out) const override { copy_out(grads_, i, out); }

  void lookahead_init() override { std::copy_n(params_, param_floats_, ema_); }
  void lookahead(float decay) override {
    trace::Range range("lookahead");
    const float t = 1.0f - decay;
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (std::int64_t i = 0; i < param_floats_; ++i) {
      ema_[i] += t * (params_[i] - ema_[i]);  // torch.lerp
      params_[i] = ema_[i];
    }
  }
  void read_ema(std::size_t i, std::span<float> out) const override { copy_out(ema_, i, out); }
  LossScale loss_scale() const override { return loss_scale_; }
  void set_loss_scale(const LossScale& scale) override {
    if (dtype_ == DType::f16) loss_scale_ = scale;
  }
  void write_ema(std::size_t i, std::span<const float> in) override { copy_in(ema_, i, in); }

  void set_profiling(bool on) override {
    profiling_ = on;
    times_.assign(cpu_.size(), LayerTime{});
    for (const CpuLayer& l : cpu_) {
      CpuLayer batch = l;
      batch.n = batch_;
      if (const CpuOp& op = cpu_op(l.layer->op); op.describe) times_[static_cast<std::size_t>(l.layer->index)].detail = op.describe(batch);
    }
  }
  std::vector<LayerTime> layer_times() const override { return times_; }
  std::string describe() const override {
    return fmt::format("cpu, {} thread{}{}{}", threads_, threads_ == 1 ? "" : "s", layout_ == Layout::nhwc ? ", nhwc" : "",
                       dtype_ == DType::f32 ? "" : fmt::format(", {} emulated", to_string(dtype_)));
  }

 private:
  float* activation(int layer) const {
    int b = plan_.activation[static_cast<std::size_t>(layer)];
    return arena_ + plan_.buffers[static_cast<std::size_t>(b)].offset / 4;
  }
  float* gradient(int layer) const {
    int b = plan_.gradient[static_cast<std::size_t>(layer)];
    return b < 0 ? nullptr : arena_ + plan_.buffers[static_cast<std::size_t>(b)].offset / 4;
  }
  void copy_out(const float* block, std::size_t i, std::span<float> out) const {
    auto n = static_cast<std::size_t>(graph_.params()[i].elements);
    std::copy_n(block + param_offset_[i], std::min(n, out.size()), out.begin());
  }
  void copy_in(float* block, std::size_t i, std::span<const float> in) {
    auto n = static_cast<std::size_t>(graph_.params()[i].elements);
    std::copy_n(in.begin(), std::min(n, in.size()), block + param_offset_[i]);
  }

  // The run's one allocation: zeroed, aligned to MemoryPlan::alignment.
  class Memory {
   public:
    Memory() = default;
    explicit Memory(std::size_t bytes)
        : bytes_(bytes), data_(static_cast<std::byte*>(::operator new(std::max<std::size_t>(bytes, 1), kAlign))) {
      std::memset(data_.get(), 0, bytes);
    }
    float* floats(std::int64_t offset) const { return reinterpret_cast<float*>(data_.get() + offset); }
    std::size_t bytes() const { return bytes_; }

   private:
    static constexpr std::align_val_t kAlign{static_cast<std::size_t>(MemoryPlan::alignment)};
    struct Free {
      void operator()(std::byte* p) const { ::operator delete(p, kAlign); }
    };
    std::size_t bytes_ = 0;
    std::unique_ptr<std::byte, Free> data_;
  };

  Graph graph_;
  std::int64_t batch_;
  int threads_;
  Layout layout_;
  CpuConv cpu_conv_;
  DType dtype_;
  MemoryPlan plan_;
  Memory memory_;
  float *arena_ = nullptr, *params_ = nullptr, *ema_ = nullptr, *grads_ = nullptr, *momentum_ = nullptr;
  std::int64_t param_floats_ = 0;  // one parameter-shaped block, padding included
  std::vector<std::int64_t> param_offset_;  // in floats
  std::vector<std::size_t> in_dtype_;       // fp16/bf16: the parameters read in the dtype
  float* copies_ = nullptr;                 // their rounded copies (parameter-block layout)
  LossScale loss_scale_;                    // fp16's; {1, 0} otherwise
  bool skip_update_ = false;                // the last backward's gradients overflowed (fp16)
  std::vector<CpuLayer> cpu_;
  int* labels_ = nullptr;
  struct RangeNames {
    std::string fwd, bwd;
  };
  std::vector<RangeNames> names_;  // "conv1/fwd": made once, so a step allocates nothing
  std::int64_t n_ = 0;
  std::vector<StepStats> stats_;
  bool profiling_ = false;
  std::vector<LayerTime> times_;
};

}  // namespace

std::unique_ptr<Executor> make_cpu_executor(const Graph& graph, std::int64_t batch, int threads, Layout layout,
                                            CpuConv cpu_conv, DType dtype) {
  return std::make_unique<CpuExecutor>(graph, batch, threads, layout, cpu_conv, dtype);
}

}  // namespace kiln::detail
