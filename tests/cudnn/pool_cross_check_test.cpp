// Floor- and ceil-mode pooling: kiln's shape rules against cuDNN's graph API and legacy API,
// and against PyTorch's formula; see cross_check_test.cpp for the method.
#include "cross_check_util.hpp"

namespace {

using namespace kiln_xcheck;

// ---- pooling ----------------------------------------------------------------------------

struct PoolCase {
  bool max = true;
  std::int64_t n = 1, c = 1, h = 1, w = 1;
  Hw kernel{1, 1}, pad{0, 0};
  std::optional<Hw> stride;  // unset: the kernel, as in PyTorch
  bool ceil = false;
  DType dtype = DType::f32;
  Layout layout = Layout::nchw;

  Hw resolved_stride() const { return stride.value_or(kernel); }
  Dims x() const { return {n, c, h, w}; }
  std::string str() const {
    return fmt::format("x {} {} kernel {} stride {}{} pad {}{} {} {}", dims_str(x()), max ? "maxpool" : "avgpool",
                       hw_str(kernel), hw_str(resolved_stride()), stride ? "" : " (default)", hw_str(pad),
                       ceil ? " ceil" : "", kiln::to_string(dtype), kiln::to_string(layout));
  }
};

// PyTorch's MaxPool2d/AvgPool2d output size, computed here independently of kiln:
// floor or ceil of (size + 2 pad - k) / s, plus 1; in ceil mode the last window must start
// inside the input or its left padding.
std::int64_t pytorch_pooled(std::int64_t size, std::int64_t k, std::int64_t s, std::int64_t pad, bool ceil) {
  std::int64_t span = size + 2 * pad - k;
  std::int64_t out = (ceil ? -floor_div(-span, s) : floor_div(span, s)) + 1;
  if (ceil && (out - 1) * s >= size + pad) --out;
  return out;
}

struct PoolRef {
  enum Verdict { accept, reject_pad, reject_window } verdict = accept;
  std::int64_t p = 0, q = 0;
};

PoolRef pool_reference(const PoolCase& c) {
  PoolRef r;
  const Hw s = c.resolved_stride();
  r.p = pytorch_pooled(c.h, c.kernel.h, s.h, c.pad.h, c.ceil);
  r.q = pytorch_pooled(c.w, c.kernel.w, s.w, c.pad.w, c.ceil);
  if (2 * c.pad.h > c.kernel.h || 2 * c.pad.w > c.kernel.w) r.verdict = PoolRef::reject_pad;
  else if (c.kernel.h > c.h + 2 * c.pad.h || c.kernel.w > c.w + 2 * c.pad.w || r.p < 1 || r.q < 1)
    r.verdict = PoolRef::reject_window;
  return r;
}

bool graph_pool(const PoolCase& c, std::int64_t p, std::int64_t q) {
  kiln::cuda::PoolOps ops;
  const Hw s = c.resolved_stride();
  return kiln::cuda::make_pool_fwd(ops, c.max, c.x(), {c.n, c.c, p, q}, {c.kernel.h, c.kernel.w}, {s.h, s.w},
                                   {c.pad.h, c.pad.w}, c.dtype, c.layout, 1)
      .ok();
}

std::string graph_pool_sizes(const PoolCase& c, std::int64_t p, std::int64_t q) {
  std::string hs, ws;
  for (std::int64_t v = 0; v <= c.h + 8; ++v)
    if (graph_pool(c, v, std::max<std::int64_t>(q, 1))) hs += fmt::format(" {}", v);
  for (std::int64_t v = 0; v <= c.w + 8; ++v)
    if (graph_pool(c, std::max<std::int64_t>(p, 1), v)) ws += fmt::format(" {}", v);
  return fmt::format("cuDNN graph API finalizes with P in {{{} }}, Q in {{{} }}", hs, ws);
}

kiln::LayerDef pool_def(const PoolCase& c) {
  kiln::LayerDef def = c.max ? kiln::layers::maxpool(c.kernel) : kiln::layers::avgpool(c.kernel);
  def.pad(Padding::hw(c.pad.h, c.pad.w)).ceil(c.ceil);
  if (c.stride) def.stride(*c.stride);
  return def;
}

struct PoolCounts {
  int cases = 0, accepted = 0, rejected = 0, kiln_only = 0, legacy = 0, max = 0, padded = 0, default_stride = 0;
  int graph_refusals = 0, graph_lenient = 0;
};

void check_pool(const PoolCase& c, Disagreements& d, PoolCounts& n) {
  const PoolRef ref = pool_reference(c);
  const KilnVerdict kv = kiln_verdict(kiln::Shape::chw(c.c, c.h, c.w), pool_def(c));
  const bool accepted = kv.layer.has_value();
  ++n.cases;
  n.max += c.max, n.padded += c.pad != Hw{0, 0}, n.default_stride += !c.stride;
  d.expect(accepted == (ref.verdict == PoolRef::accept), [&] {
    return fmt::format("{}\n  kiln {} it, PyTorch's rules {} it (output {}x{})\n{}", c.str(), accepted ? "accepts" : "rejects",
                       ref.verdict == PoolRef::accept ? "accept" : "reject", ref.p, ref.q, kv.diagnostics);
  });
  if (accepted) {
    ++n.accepted;
    const std::int64_t p = kv.layer->shape.h, q = kv.layer->shape.w;
    d.expect(kv.layer->shape == kiln::Shape::chw(c.c, ref.p, ref.q) && kv.layer->attrs.stride == c.resolved_stride(), [&] {
      return fmt::format("{}\n  kiln: output {}; PyTorch: {}x{}x{}", c.str(), kv.layer->shape.str(), c.c, ref.p, ref.q);
    });
    d.expect(graph_pool(c, p, q), [&] {
      return fmt::format("{}\n  kiln: output {}x{}; cuDNN graph API refuses it\n  {}", c.str(), p, q, graph_pool_sizes(c, p, q));
    });
    std::pair<std::int64_t, std::int64_t> wrong[] = {{p + 1, q}, {p, q + 1}, {p - 1, q}, {p, q - 1}};
    for (auto [wp, wq] : wrong) {
      if (wp < 1 || wq < 1) continue;
      d.expect(!graph_pool(c, wp, wq), [&] {
        return fmt::format("{}\n  kiln: output {}x{}; cuDNN graph API also finalizes {}x{}\n  {}", c.str(), p, q, wp, wq,
                           graph_pool_sizes(c, p, q));
      });
    }
    ++n.legacy;
    const auto legacy = legacy_pool(c.max, c.x(), c.kernel, c.resolved_stride(), c.pad, c.dtype, c.layout);
    d.expect(legacy.equals({c.n, c.c, p, q}), [&] {
      return fmt::format("{}\n  kiln: output {}x{}x{}; cudnnGetPooling2dForwardOutputDim: {}", c.str(), c.c, p, q, legacy.str());
    });
    return;
  }

  ++n.rejected;
  d.expect(kv.only_layer_errors, [&] { return fmt::format("{}\n  kiln rejects another layer:\n{}", c.str(), kv.diagnostics); });
  // pad <= kernel/2 is PyTorch's rule (kiln keeps it); cuDNN accepts larger pads, so this
  // rejection is not cross-checked.
  if (ref.verdict == PoolRef::reject_pad) {
    ++n.kiln_only;
    return;
  }
  // The window does not fit its padded input. cuDNN's graph-API resample divides
  // (size + 2 pad - window) by the stride truncating toward zero: where the window
  // overshoots by the stride or more it finalizes only an output of size 0, its way of
  // saying no, and any positive size must be refused. Where it overshoots by less than the
  // stride (input 4, window 5, stride 2: PyTorch -1/2 -> floor -1 -> output 0, cuDNN
  // -1/2 -> 0 -> output 1) the graph API finalizes output 1: lenient rounding, not a rule
  // of cuDNN's that kiln lacks, and kiln never hands it such a layer. Those cases are left
  // out of the refusal check; that they finalize with exactly the truncated size is
  // checked, so that the exclusion stays no wider than cuDNN's rounding. The legacy API
  // below refuses them, as kiln does.
  const Hw s = c.resolved_stride();
  const std::int64_t tp = (c.h + 2 * c.pad.h - c.kernel.h) / s.h + 1, tq = (c.w + 2 * c.pad.w - c.kernel.w) / s.w + 1;
  if (tp >= 1 && tq >= 1) {
    ++n.graph_lenient;
    d.expect(graph_pool(c, tp, tq), [&] {
      return fmt::format("{}\n  kiln rejects it; cuDNN's graph API was expected to finalize the truncated size {}x{} but "
                         "does not: if it now refuses every size, remove this exclusion\n  {}",
                         c.str(), tp, tq, graph_pool_sizes(c, tp, tq));
    });
  } else {
    ++n.graph_refusals;
    const std::int64_t p1 = std::max<std::int64_t>(ref.p, 1), q1 = std::max<std::int64_t>(ref.q, 1);
    std::pair<std::int64_t, std::int64_t> sizes[] = {{p1, q1}, {1, 1}};
    for (auto [sp, sq] : sizes) {
      d.expect(!graph_pool(c, sp, sq), [&] {
        return fmt::format("{}\n  kiln rejects it (PyTorch's formula: {}x{}); cuDNN graph API finalizes output {}x{}\n  {}\n{}",
                           c.str(), ref.p, ref.q, sp, sq, graph_pool_sizes(c, p1, q1), kv.diagnostics);
      });
    }
  }
  ++n.legacy;
  const auto legacy = legacy_pool(c.max, c.x(), c.kernel, c.resolved_stride(), c.pad, c.dtype, c.layout);
  d.expect(legacy.refused(), [&] {
    return fmt::format("{}\n  kiln rejects it (PyTorch's formula: {}x{}); cudnnGetPooling2dForwardOutputDim: {}\n{}", c.str(),
                       ref.p, ref.q, legacy.str(), kv.diagnostics);
  });
}

PoolCase random_pool(Rng& rng) {
  PoolCase c;
  c.max = rng.chance(1, 2);
  c.n = rng.pick<std::int64_t>({1, 2, 8});
  c.c = rng.pick<std::int64_t>({1, 3, 8, 16});
  auto size = [&] { return rng.chance(1, 8) ? rng.pick<std::int64_t>({31, 32}) : rng.in(1, 12); };
  c.h = size();
  c.w = rng.chance(1, 2) ? c.h : size();
  c.kernel.h = rng.in(1, 6);
  c.kernel.w = rng.chance(1, 2) ? c.kernel.h : rng.in(1, 6);
  if (rng.chance(3, 4)) c.stride = rng.chance(2, 3) ? Hw{rng.in(1, 3), 0} : Hw{rng.in(1, 3), rng.in(1, 3)};
  if (c.stride && c.stride->w == 0) c.stride->w = c.stride->h;
  // Mostly legal pads (<= kernel/2), some one past it.
  auto pad = [&](std::int64_t k) { return rng.chance(1, 3) ? 0 : rng.in(0, k / 2 + (rng.chance(1, 6) ? 1 : 0)); };
  c.pad.h = pad(c.kernel.h);
  c.pad.w = rng.chance(1, 2) && c.kernel.w == c.kernel.h ? c.pad.h : pad(c.kernel.w);
  c.dtype = rng.chance(2, 3) ? DType::f32 : rng.pick({DType::f16, DType::bf16});
  c.layout = rng.pick({Layout::nchw, Layout::nhwc});
  return c;
}

TEST(CudnnCrossCheck, FloorModePoolingShapeRulesAgree) {
  const auto t0 = std::chrono::steady_clock::now();
  Disagreements d;
  PoolCounts n;
  // Edges: a window exactly filling the padded input, and one row or column too big with a
  // stride that truncating division would hide.
  for (bool max : {true, false})
    for (std::int64_t s = 1; s <= 3; ++s)
      for (std::int64_t extra = 0; extra <= 2; ++extra)
        for (std::int64_t pad = 0; pad <= 1; ++pad) {
          PoolCase c;
          c.max = max, c.n = 2, c.c = 3, c.h = 4, c.w = 5, c.pad = Hw{pad, pad}, c.stride = Hw{s, 1};
          c.kernel = Hw{c.h + 2 * pad + extra, 2};
          if (2 * pad > c.kernel.h) continue;
          check_pool(c, d, n);
          c.layout = Layout::nhwc, c.dtype = DType::bf16, c.kernel = Hw{2, c.w + 2 * pad + extra}, c.stride = Hw{1, s};
          check_pool(c, d, n);
        }
  Rng rng(0x706f6f6cULL);
  for (int i = 0; i < 12000; ++i) check_pool(random_pool(rng), d, n);

  const double secs = seconds_since(t0);
  print_counts("pool",
               fmt::format("{} cases ({} maxpool, {} padded, {} default stride), kiln accepted {} and rejected {} ({} by the "
                           "kiln/PyTorch-only pad rule); cuDNN graph API refusal checks {}, truncated-size finalizes (refusal not checked) {}; "
                           "legacy checks {}",
                           n.cases, n.max, n.padded, n.default_stride, n.accepted, n.rejected, n.kiln_only, n.graph_refusals,
                           n.graph_lenient, n.legacy),
               secs);
  RecordProperty("cases", n.cases);
  RecordProperty("accepted", n.accepted);
  RecordProperty("rejected", n.rejected);
  EXPECT_GT(n.accepted, 1500);
  EXPECT_GT(n.rejected - n.kiln_only, 300);
  EXPECT_GT(n.kiln_only, 50);
  EXPECT_GT(n.padded, 1000);
  d.finish("pool");
}

// cuDNN has no ceil mode; kiln's ceil-mode sizes are checked against PyTorch's formula
// (pytorch_pooled), and compile_cudnn must report kiln's own kernel, naming ceil mode
// whenever the size differs from the floor-mode size.
TEST(CudnnCrossCheck, CeilModePoolingMatchesPyTorch) {
  const auto t0 = std::chrono::steady_clock::now();
  Disagreements d;
  int cases = 0, accepted = 0, differs = 0;
  for (bool max : {true, false})
    for (std::int64_t size = 1; size <= 12; ++size)
      for (std::int64_t k = 1; k <= 4; ++k)
        for (std::int64_t s = 1; s <= 3; ++s)
          for (std::int64_t pad = 0; pad <= k / 2; ++pad) {
            PoolCase c;
            c.max = max, c.n = 2, c.c = 3, c.h = size, c.w = size + 1, c.kernel = Hw{k, k}, c.stride = Hw{s, s};
            c.pad = Hw{pad, pad}, c.ceil = true;
            const PoolRef ref = pool_reference(c);
            kiln::GraphBuilder b("ceil", kiln::Shape::chw(c.c, c.h, c.w), 2);
            b.add(pool_def(c).named("probe")).add(kiln::layers::flatten()).add(kiln::layers::linear(2));
            ++cases;
            std::optional<kiln::Graph> g;
            try {
              g = b.build();
            } catch (const kiln::GraphError&) {
            }
            d.expect(g.has_value() == (ref.verdict == PoolRef::accept), [&] {
              return fmt::format("{}\n  kiln {} it; PyTorch's formula gives {}x{}", c.str(), g ? "accepts" : "rejects", ref.p,
                                 ref.q);
            });
            if (!g) continue;
            ++accepted;
            const kiln::Layer& layer = g->layers()[1];
            d.expect(layer.shape == kiln::Shape::chw(c.c, ref.p, ref.q), [&] {
              return fmt::format("{}\n  kiln: {}; PyTorch's formula: {}x{}", c.str(), layer.shape.str(), ref.p, ref.q);
            });
            const bool same_as_floor =
                ref.p == pytorch_pooled(c.h, k, s, pad, false) && ref.q == pytorch_pooled(c.w, k, s, pad, false);
            differs += !same_as_floor;
            kiln::CudnnReport report = kiln::compile_cudnn(*g, kiln::Target{kiln::Backend::cuda, c.n, c.dtype, c.layout});
            const std::string& path = report.layers.at(1).path;
            // Both run kiln's kernel (as the executor does); check names ceil mode where it matters.
            const std::string want = same_as_floor ? "kiln kernel: pooling" : "kiln kernel: ceil-mode";
            d.expect(path.rfind(want, 0) == 0,
                     [&] { return fmt::format("{}\n  compile_cudnn path '{}', want '{}...'", c.str(), path, want); });
          }
  print_counts("ceil pool", fmt::format("{} cases, kiln accepted {} ({} differ from floor mode)", cases, accepted, differs),
               seconds_since(t0));
  EXPECT_GT(accepted, 300);
  EXPECT_GT(differs, 100);
  d.finish("ceil pool");
}


}  // namespace
