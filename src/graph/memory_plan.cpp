// The memory planner: lifetimes of every activation and activation gradient over one
// training (or evaluation) step, then a greedy placement by size (largest first, lowest
// free offset), which reuses memory wherever lifetimes do not overlap.
#include <algorithm>
#include <fmt/format.h>
#include <numeric>
#include <stdexcept>

#include "graph/memory_blocks.hpp"
#include "graph/op_def.hpp"
#include "kiln/memory.hpp"
#include "util/checked.hpp"

namespace kiln {

namespace {

// Whether a flatten reads its input's memory as is: always for NCHW (channel-major already)
// and for 1x1 maps; an NHWC feature map must be reordered.
bool view(std::span<const Layer> layers, const Layer& layer, Layout layout) {
  if (layer.op != OpKind::flatten) return false;
  const Shape& in = layers[static_cast<std::size_t>(layer.inputs[0])].shape;
  return layout == Layout::nchw || !in.is_image() || in.h * in.w == 1;
}

// A view and its input share one buffer, found by following inputs.
int storage_root(std::span<const Layer> layers, int i, Layout layout) {
  while (view(layers, layers[static_cast<std::size_t>(i)], layout)) i = layers[static_cast<std::size_t>(i)].inputs[0];
  return i;
}

[[noreturn]] void too_large(const Graph& graph, std::int64_t batch) {
  Diagnostic d;
  d.loc.file = graph.source();
  d.message = fmt::format("the activations of model '{}' at batch {} need more bytes than fit in 64 bits", graph.name(), batch);
  d.hint = "use a smaller batch";
  throw GraphError({d});
}

}  // namespace

bool flatten_is_view(const Graph& graph, const Layer& layer, Layout layout) { return view(graph.layers(), layer, layout); }

MemoryPlan plan_memory(const Graph& graph, std::int64_t batch, DType dtype, PlanMode mode, Layout layout) {
  return detail::plan_memory(graph, batch, dtype, mode, layout, {});
}

MemoryPlan detail::plan_memory(const Graph& graph, std::int64_t batch, DType dtype, PlanMode mode, Layout layout,
                               std::span<const RunsAt> runs_at) {
  if (batch < 1) throw UsageError(fmt::format("batch must be at least 1, got {}", batch));
  auto layers = graph.layers();
  const int n = static_cast<int>(layers.size());
  const bool train = mode == PlanMode::train;
  auto fwd = [](int i) { return i; };
  auto bwd = [n](int i) { return 2 * n - i; };

  MemoryPlan plan;
  plan.batch = batch;
  plan.dtype = dtype;
  plan.mode = mode;
  plan.activation.assign(static_cast<std::size_t>(n), -1);
  plan.gradient.assign(static_cast<std::size_t>(n), -1);
  plan.accumulate.resize(static_cast<std::size_t>(n));

  // A layer whose output reaches the loss: the last layer, and every layer one of whose
  // consumers does. The rest (a probe left beside the model) run forward only, as in
  // PyTorch, where their parameters get no gradient and the optimizer leaves them alone.
  std::vector<bool> reaches_loss(static_cast<std::size_t>(n), false);
  for (int i = n - 1; i >= 0; --i) {
    const Layer& layer = layers[static_cast<std::size_t>(i)];
    reaches_loss[static_cast<std::size_t>(i)] =
        i == n - 1 || std::any_of(layer.consumers.begin(), layer.consumers.end(),
                                  [&](int c) { return reaches_loss[static_cast<std::size_t>(c)]; });
  }

  // A gradient of layer i's output is needed when its output reaches the loss and a
  // trainable parameter sits at or before i. Every consumer of such a layer that reaches
  // the loss needs one too, so its gradient is written by those consumers' backward.
  std::vector<bool> needs_grad(static_cast<std::size_t>(n), false);
  for (const Layer& layer : layers) {
    if (!reaches_loss[static_cast<std::size_t>(layer.index)]) continue;
    bool own = std::any_of(layer.params.begin(), layer.params.end(),
                           [&](int p) { return graph.params()[static_cast<std::size_t>(p)].trainable; });
    bool upstream = std::any_of(layer.inputs.begin(), layer.inputs.end(), [&](int in) { return needs_grad[static_cast<std::size_t>(in)]; });
    needs_grad[static_cast<std::size_t>(layer.index)] = train && layer.index > 0 && (own || upstream);
  }

  auto bytes_of = [&](const Layer& layer) {
    auto b = detail::checked_product({batch, layer.shape.elements(), size_of(dtype)});
    if (!b) too_large(graph, batch);
    return detail::align_up(*b, MemoryPlan::alignment);
  };

  // Activation lifetimes, per storage root.
  std::vector<int> act_first(static_cast<std::size_t>(n), -1), act_last(static_cast<std::size_t>(n), -1);
  for (const Layer& layer : layers) {
    int root = storage_root(layers, layer.index, layout);
    auto r = static_cast<std::size_t>(root);
    if (act_first[r] < 0) act_first[r] = fwd(layer.index);
    int last = fwd(layer.index);
    if (layer.index == n - 1) last = n;  // the loss reads the logits
    for (int c : layer.consumers) {
      const Layer& consumer = layers[static_cast<std::size_t>(c)];
      last = std::max(last, fwd(c));
      if (train && !view(layers, consumer, layout) && needs_grad[static_cast<std::size_t>(c)] &&
          detail::op_def(consumer.op).backward_needs(consumer).input)
        last = std::max(last, bwd(c));
    }
    if (train && needs_grad[static_cast<std::size_t>(layer.index)] && detail::op_def(layer.op).backward_needs(layer).output)
      last = std::max(last, bwd(layer.index));
    act_last[r] = std::max(act_last[r], last);
  }
  for (const RunsAt& f : runs_at) {  // written at the slot it runs in
    auto r = static_cast<std::size_t>(storage_root(layers, f.layer, layout));
    act_first[r] = std::min(act_first[r], fwd(f.at));
  }
  for (int root = 0; root < n; ++root) {
    auto r = static_cast<std::size_t>(root);
    if (act_first[r] < 0 || view(layers, layers[r], layout)) continue;
    plan.buffers.push_back({Buffer::Kind::activation, root, bytes_of(layers[r]), 0, act_first[r], act_last[r]});
  }
  for (const Layer& layer : layers) {
    int root = storage_root(layers, layer.index, layout);
    for (std::size_t b = 0; b < plan.buffers.size(); ++b)
      if (plan.buffers[b].layer == root) plan.activation[static_cast<std::size_t>(layer.index)] = static_cast<int>(b);
  }

  // Gradient lifetimes: written by the backward of the consumers (the latest consumer runs
  // first), read by the layer's own backward. Flatten shares its input's gradient buffer.
  if (train) {
    std::vector<int> grad_first(static_cast<std::size_t>(n), 2 * n + 1), grad_last(static_cast<std::size_t>(n), -1);
    for (const Layer& layer : layers) {
      if (!needs_grad[static_cast<std::size_t>(layer.index)]) continue;
      auto r = static_cast<std::size_t>(storage_root(layers, layer.index, layout));
      int& first = grad_first[r];
      if (layer.index == n - 1) first = std::min(first, n);  // the loss writes the logits' gradient
      for (int c : layer.consumers)
        if (needs_grad[static_cast<std::size_t>(c)] && !view(layers, layers[static_cast<std::size_t>(c)], layout))
          first = std::min(first, bwd(c));
      if (!view(layers, layer, layout)) grad_last[r] = std::max(grad_last[r], bwd(layer.index));
    }
    for (const RunsAt& f : runs_at)  // read at the slot it runs in
      if (needs_grad[static_cast<std::size_t>(f.layer)]) {
        auto r = static_cast<std::size_t>(storage_root(layers, f.layer, layout));
        grad_last[r] = std::max(grad_last[r], bwd(f.at));
      }
    for (int root = 0; root < n; ++root) {
      auto r = static_cast<std::size_t>(root);
      if (grad_last[r] < 0) continue;
      if (grad_first[r] > grad_last[r])
        throw std::logic_error(fmt::format("memory plan: the gradient of layer '{}' is read before any backward writes it",
                                           layers[r].name));
      plan.buffers.push_back({Buffer::Kind::gradient, root, bytes_of(layers[r]), 0, grad_first[r], grad_last[r]});
      int b = static_cast<int>(plan.buffers.size()) - 1;
      for (const Layer& layer : layers)
        if (needs_grad[static_cast<std::size_t>(layer.index)] && storage_root(layers, layer.index, layout) == root)
          plan.gradient[static_cast<std::size_t>(layer.index)] = b;
    }
    // Who writes a gradient buffer first: backward runs in reverse layer order, so of all
    // (consumer, slot) pairs writing one buffer, the highest consumer index writes first
    // and the others add.
    std::vector<std::pair<int, int>> first_writer(plan.buffers.size(), {-1, -1});
    for (int c = n - 1; c >= 1; --c) {
      const Layer& consumer = layers[static_cast<std::size_t>(c)];
      auto& acc = plan.accumulate[static_cast<std::size_t>(c)];
      acc.assign(consumer.inputs.size(), false);
      if (!needs_grad[static_cast<std::size_t>(c)] || view(layers, consumer, layout)) continue;
      for (std::size_t slot = 0; slot < consumer.inputs.size(); ++slot) {
        int g = plan.gradient[static_cast<std::size_t>(consumer.inputs[slot])];
        if (g < 0) continue;
        auto& w = first_writer[static_cast<std::size_t>(g)];
        if (w.first < 0) w = {c, static_cast<int>(slot)};
        else acc[slot] = true;
      }
    }
  }

  // Greedy placement: largest first, at the lowest offset that overlaps no placed buffer
  // live at the same time.
  std::vector<std::size_t> order(plan.buffers.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return plan.buffers[a].bytes > plan.buffers[b].bytes; });
  std::vector<std::size_t> placed;
  for (std::size_t i : order) {
    Buffer& buf = plan.buffers[i];
    std::vector<std::pair<std::int64_t, std::int64_t>> busy;
    for (std::size_t j : placed) {
      const Buffer& o = plan.buffers[j];
      if (o.last < buf.first || buf.last < o.first) continue;
      busy.emplace_back(o.offset, o.offset + o.bytes);
    }
    std::sort(busy.begin(), busy.end());
    std::int64_t offset = 0;
    for (auto [lo, hi] : busy) {
      if (offset + buf.bytes <= lo) break;
      offset = std::max(offset, hi);
    }
    buf.offset = offset;
    placed.push_back(i);
    auto end = detail::checked_add(offset, buf.bytes);
    if (!end) too_large(graph, batch);
    plan.arena_bytes = std::max(plan.arena_bytes, *end);
    auto sum = detail::checked_add(plan.activation_sum, buf.bytes);
    if (!sum) too_large(graph, batch);
    plan.activation_sum = *sum;
  }
  for (int t = 0; t <= 2 * n; ++t) {
    std::int64_t live = 0;
    for (const Buffer& b : plan.buffers)
      if (b.first <= t && t <= b.last) live += b.bytes;
    plan.live_peak = std::max(plan.live_peak, live);
  }

  // Parameters stay fp32 whatever the activations' dtype; each starts on an aligned offset.
  std::int64_t at = 0;
  for (const Param& p : graph.params()) {
    std::int64_t bytes = p.elements * 4;
    plan.param_bytes += bytes;
    if (train && p.trainable && needs_grad[static_cast<std::size_t>(p.layer)]) plan.grad_bytes += bytes;
    plan.param_offsets.push_back(at);
    auto end = detail::checked_add(at, bytes);
    if (!end) too_large(graph, batch);
    at = detail::align_up(*end, MemoryPlan::alignment);
  }
  plan.param_block_bytes = at;
  plan.state_offsets.assign(static_cast<std::size_t>(n), -1);
  detail::lay_out_blocks(graph, plan, nullptr);
  return plan;
}

namespace detail {

void lay_out_blocks(const Graph& graph, MemoryPlan& plan, const BackendMemory* backend) {
  plan.blocks.clear();
  plan.total_bytes = 0;
  auto add = [&](const char* name, std::int64_t bytes) {
    bytes = align_up(bytes, MemoryPlan::alignment);
    auto end = checked_add(plan.total_bytes, bytes);
    if (!end) too_large(graph, plan.batch);
    plan.blocks.push_back({name, plan.total_bytes, bytes});
    plan.total_bytes = *end;
  };
  add("parameters", plan.param_block_bytes);
  if (plan.mode == PlanMode::train) {
    add("gradients", plan.param_block_bytes);
    add("momentum", plan.param_block_bytes);
    add("averages", plan.param_block_bytes);
  }
  add("activations", plan.arena_bytes);
  if (!backend) return;
  std::int64_t state = 0;
  for (std::size_t i = 0; i < backend->state_bytes.size() && i < plan.state_offsets.size(); ++i) {
    if (backend->state_bytes[i] <= 0) continue;
    plan.state_offsets[i] = state;
    auto end = checked_add(state, backend->state_bytes[i]);
    if (!end) too_large(graph, plan.batch);
    state = align_up(*end, MemoryPlan::alignment);
  }
  add("state", state);
  add("workspace", backend->workspace_bytes);
  add("staging", backend->staging_bytes);
  if (backend->rounded_weights_bytes > 0) add("rounded weights", backend->rounded_weights_bytes);
}

}  // namespace detail

}  // namespace kiln
