// kiln's shape rules and cuDNN's must agree: every convolution and floor-mode pooling that
// kiln accepts, cuDNN must accept with exactly kiln's output size, and what kiln rejects
// cuDNN must refuse too. Exclusions, each explained where it is made: rules kiln takes from
// PyTorch that cuDNN lacks, and cases one oracle cannot tell. Two cuDNN oracles, host-only:
//   - the graph API through kiln's own builders (make_conv_ops, make_pool_fwd), which
//     finalize only when the output tensor has the size cuDNN computes;
//   - the legacy API's cudnnGetConvolution2dForwardOutputDim / GetPooling2dForwardOutputDim,
//     which state cuDNN's size directly (symmetric padding only).
// The grid is sampled with a fixed seed; mt19937_64's sequence is fixed by the standard and
// `Rng` avoids the implementation-defined distributions, so every run checks the same cases.
#include "cross_check_util.hpp"

namespace {

using namespace kiln_xcheck;

// ---- convolution ------------------------------------------------------------------------

struct ConvCase {
  std::int64_t n = 1, c = 1, h = 1, w = 1, k = 1, groups = 1;
  Hw kernel{1, 1}, stride{1, 1}, dilation{1, 1};
  Padding pad;
  DType dtype = DType::f32;
  Layout layout = Layout::nchw;

  Dims x() const { return {n, c, h, w}; }
  Dims wdims() const { return {k, c / groups, kernel.h, kernel.w}; }
  std::string str() const {
    return fmt::format("x {} conv out {} kernel {} stride {} pad {} dilation {} groups {} {} {}", dims_str(x()), k,
                       hw_str(kernel), hw_str(stride), pad_str(pad), hw_str(dilation), groups, kiln::to_string(dtype),
                       kiln::to_string(layout));
  }
};

// PyTorch's Conv2d, computed here independently of kiln.
struct ConvRef {
  enum Verdict { accept, reject_same_stride, reject_groups, reject_kernel } verdict = accept;
  Padding pad;              // `same` resolved
  std::int64_t p = 0, q = 0;  // the formula's output size, <= 0 when the kernel does not fit
  bool fits = true;           // the dilated kernel fits the padded input
};

ConvRef conv_reference(const ConvCase& c) {
  ConvRef r;
  r.pad = c.pad;
  if (c.pad.same) {
    std::int64_t th = c.dilation.h * (c.kernel.h - 1), tw = c.dilation.w * (c.kernel.w - 1);
    r.pad = Padding{th / 2, th - th / 2, tw / 2, tw - tw / 2, false};
  }
  std::int64_t ph = c.h + r.pad.top + r.pad.bottom, pw = c.w + r.pad.left + r.pad.right;
  std::int64_t kh = c.dilation.h * (c.kernel.h - 1) + 1, kw = c.dilation.w * (c.kernel.w - 1) + 1;
  r.p = floor_div(ph - kh, c.stride.h) + 1;
  r.q = floor_div(pw - kw, c.stride.w) + 1;
  r.fits = kh <= ph && kw <= pw;
  if (c.pad.same && c.stride != Hw{1, 1}) r.verdict = ConvRef::reject_same_stride;
  else if (c.c % c.groups != 0 || c.k % c.groups != 0) r.verdict = ConvRef::reject_groups;
  else if (!r.fits) r.verdict = ConvRef::reject_kernel;
  return r;
}

kiln::cuda::Status graph_conv(const ConvCase& c, const kiln::cuda::ConvGeometry& g, std::int64_t p, std::int64_t q,
                              std::string* part = nullptr) {
  kiln::cuda::ConvOps ops;
  return kiln::cuda::make_conv_ops(ops, c.x(), c.wdims(), {c.n, c.k, p, q}, g, c.dtype, c.layout, 1, part);
}

kiln::cuda::ConvGeometry geometry(const ConvCase& c, const Padding& pad) {
  return {{c.stride.h, c.stride.w}, {c.dilation.h, c.dilation.w}, {pad.top, pad.left}, {pad.bottom, pad.right}};
}

// The output sizes cuDNN's graph API finalizes for (H probed with Q fixed, then W with P
// fixed), for a failure message only.
std::string graph_conv_sizes(const ConvCase& c, const kiln::cuda::ConvGeometry& g, std::int64_t p, std::int64_t q) {
  std::string hs, ws;
  for (std::int64_t v = 0; v <= c.h + 8; ++v)
    if (graph_conv(c, g, v, std::max<std::int64_t>(q, 1)).ok()) hs += fmt::format(" {}", v);
  for (std::int64_t v = 0; v <= c.w + 8; ++v)
    if (graph_conv(c, g, std::max<std::int64_t>(p, 1), v).ok()) ws += fmt::format(" {}", v);
  return fmt::format("cuDNN graph API finalizes with P in {{{} }}, Q in {{{} }}", hs, ws);
}

ConvCase random_conv(Rng& rng) {
  ConvCase c;
  c.n = rng.pick<std::int64_t>({1, 2, 3, 8});
  c.c = rng.pick<std::int64_t>({1, 2, 3, 4, 6, 8, 12, 16});
  c.k = rng.pick<std::int64_t>({1, 2, 3, 4, 6, 8, 16});
  c.groups = rng.chance(1, 2) ? 1 : rng.pick<std::int64_t>({2, 4});
  if (c.groups > 1 && rng.chance(2, 3)) {  // mostly divisible, so that grouped convs are accepted too
    c.c = c.groups * rng.in(1, 4);
    c.k = c.groups * rng.in(1, 4);
  }
  auto size = [&] { return rng.chance(1, 8) ? rng.pick<std::int64_t>({31, 32}) : rng.in(1, 12); };
  c.h = size();
  c.w = rng.chance(1, 2) ? c.h : size();
  c.kernel.h = rng.in(1, 7);
  c.kernel.w = rng.chance(1, 2) ? c.kernel.h : rng.in(1, 7);
  c.stride.h = rng.in(1, 3);
  c.stride.w = rng.chance(2, 3) ? c.stride.h : rng.in(1, 3);
  c.dilation.h = rng.chance(1, 2) ? 1 : rng.in(2, 3);
  c.dilation.w = rng.chance(3, 4) ? c.dilation.h : rng.in(1, 3);
  switch (rng.below(4)) {
    case 0: c.pad = Padding::all(rng.in(0, 3)); break;
    case 1: c.pad = Padding::hw(rng.in(0, 3), rng.in(0, 3)); break;
    case 2: c.pad = Padding{rng.in(0, 3), rng.in(0, 3), rng.in(0, 3), rng.in(0, 3), false}; break;
    default:
      c.pad = Padding::same_size();
      if (rng.chance(3, 4)) c.stride = Hw{1, 1};
  }
  c.dtype = rng.chance(2, 3) ? DType::f32 : rng.pick({DType::f16, DType::bf16});
  c.layout = rng.pick({Layout::nchw, Layout::nhwc});
  return c;
}

struct ConvCounts {
  int cases = 0, accepted = 0, rejected = 0, kiln_only = 0, graph_refusals = 0, graph_not_expressible = 0, legacy = 0,
      legacy_blind = 0;
  int same = 0, asymmetric = 0, grouped = 0, dilated = 0, half = 0, nhwc = 0;
};

void check_conv(const ConvCase& c, Disagreements& d, ConvCounts& n) {
  const ConvRef ref = conv_reference(c);
  kiln::LayerDef def = kiln::layers::conv(c.k, c.kernel).stride(c.stride).pad(c.pad).groups(c.groups);
  def.attrs.dilation = c.dilation;
  const KilnVerdict kv = kiln_verdict(kiln::Shape::chw(c.c, c.h, c.w), std::move(def));
  const bool accepted = kv.layer.has_value();
  ++n.cases;
  n.same += c.pad.same, n.grouped += c.groups > 1, n.dilated += c.dilation != Hw{1, 1};
  n.half += c.dtype != DType::f32, n.nhwc += c.layout == Layout::nhwc, n.asymmetric += !ref.pad.symmetric();

  d.expect(accepted == (ref.verdict == ConvRef::accept), [&] {
    return fmt::format("{}\n  kiln {} it, PyTorch's rules {} it (verdict {}, output {}x{})\n{}", c.str(),
                       accepted ? "accepts" : "rejects", ref.verdict == ConvRef::accept ? "accept" : "reject",
                       static_cast<int>(ref.verdict), ref.p, ref.q, kv.diagnostics);
  });
  const bool symmetric = ref.pad.symmetric();
  if (accepted) {
    ++n.accepted;
    const kiln::Layer& layer = *kv.layer;
    const std::int64_t p = layer.shape.h, q = layer.shape.w;
    d.expect(layer.shape == kiln::Shape::chw(c.k, ref.p, ref.q) && layer.attrs.pad == ref.pad &&
                 layer.attrs.stride == std::optional<Hw>(c.stride),
             [&] {
               return fmt::format("{}\n  kiln: output {}, pad {}; PyTorch: output {}x{}x{}, pad {}", c.str(), layer.shape.str(),
                                  pad_str(layer.attrs.pad), c.k, ref.p, ref.q, pad_str(ref.pad));
             });
    if (c.pad.same)
      d.expect(p == c.h && q == c.w, [&] { return fmt::format("{}\n  pad: same gives {}x{}", c.str(), p, q); });

    // Graph API, with the geometry compile_cudnn derives from kiln's resolved attrs.
    const auto g = kiln::cuda::conv_geometry(layer.attrs);
    std::string part;
    const auto exact = graph_conv(c, g, p, q, &part);
    d.expect(exact.ok(), [&] {
      return fmt::format("{}\n  kiln: output {}x{}; cuDNN graph API refuses it at {}: {}\n  {}", c.str(), p, q, part,
                         exact.message, graph_conv_sizes(c, g, p, q));
    });
    std::pair<std::int64_t, std::int64_t> wrong[] = {{p + 1, q}, {p, q + 1}, {p - 1, q}, {p, q - 1}};
    for (auto [wp, wq] : wrong) {
      if (wp < 1 || wq < 1) continue;
      d.expect(!graph_conv(c, g, wp, wq).ok(), [&] {
        return fmt::format("{}\n  kiln: output {}x{}; cuDNN graph API also finalizes {}x{}\n  {}", c.str(), p, q, wp, wq,
                           graph_conv_sizes(c, g, p, q));
      });
    }
    if (symmetric) {
      ++n.legacy;
      const auto legacy = legacy_conv(c.x(), c.wdims(), ref.pad, c.stride, c.dilation, c.groups, c.dtype, c.layout);
      d.expect(legacy.equals({c.n, c.k, p, q}), [&] {
        return fmt::format("{}\n  kiln: output {}x{}x{}; cudnnGetConvolution2dForwardOutputDim: {}", c.str(), c.k, p, q,
                           legacy.str());
      });
    }
    return;
  }

  ++n.rejected;
  d.expect(kv.only_layer_errors, [&] { return fmt::format("{}\n  kiln rejects another layer:\n{}", c.str(), kv.diagnostics); });
  // `pad: same` needs stride 1 in PyTorch and kiln; cuDNN only ever sees explicit padding,
  // for which any stride is fine. Not a cuDNN rule, so not cross-checked.
  if (ref.verdict == ConvRef::reject_same_stride) {
    ++n.kiln_only;
    return;
  }
  const auto g = geometry(c, ref.pad);
  const std::int64_t p1 = std::max<std::int64_t>(ref.p, 1), q1 = std::max<std::int64_t>(ref.q, 1);
  // The graph API has no group count: cuDNN infers groups = C / w[1]. When C is not
  // divisible by `groups`, w = [K, C/groups] may spell a different, valid grouping (C=6,
  // groups 4: w[1] = 1 is a 6-group conv); such a case cannot be put to the graph API.
  const std::int64_t wc = c.c / c.groups;
  if (wc == 0 || c.c % wc != 0 || c.k % (c.c / wc) != 0 || !ref.fits) {
    ++n.graph_refusals;
    std::pair<std::int64_t, std::int64_t> sizes[] = {{ref.p, ref.q}, {p1, q1}, {1, 1}};
    for (auto [sp, sq] : sizes) {
      d.expect(!graph_conv(c, g, sp, sq).ok(), [&] {
        return fmt::format("{}\n  kiln rejects it (PyTorch's formula: {}x{}); cuDNN graph API finalizes output {}x{}\n  {}\n{}",
                           c.str(), ref.p, ref.q, sp, sq, graph_conv_sizes(c, g, p1, q1), kv.diagnostics);
      });
    }
  } else {
    ++n.graph_not_expressible;
  }
  // cudnnGetConvolution2dForwardOutputDim checks C against the filter and the group count
  // but never K: it answers [N, K, P, Q] for out 3, groups 2 (cuDNN refuses that only when
  // an algorithm is chosen, which needs a GPU). The graph API above does refuse it.
  const bool legacy_blind = c.c % c.groups == 0 && c.k % c.groups != 0 && ref.fits;
  n.legacy_blind += symmetric && legacy_blind;
  if (symmetric && !legacy_blind) {
    ++n.legacy;
    const auto legacy = legacy_conv(c.x(), c.wdims(), ref.pad, c.stride, c.dilation, c.groups, c.dtype, c.layout);
    d.expect(legacy.refused(), [&] {
      return fmt::format("{}\n  kiln rejects it (PyTorch's formula: {}x{}); cudnnGetConvolution2dForwardOutputDim: {}\n{}",
                         c.str(), ref.p, ref.q, legacy.str(), kv.diagnostics);
    });
  }
}

TEST(CudnnCrossCheck, ConvolutionShapeRulesAgree) {
  const auto t0 = std::chrono::steady_clock::now();
  Disagreements d;
  ConvCounts n;
  // Edges the random grid might miss: a kernel exactly filling the padded input, one row
  // too big with a stride that truncating division would hide, `same` with even kernels.
  for (std::int64_t s = 1; s <= 3; ++s)
    for (std::int64_t extra = 0; extra <= 2; ++extra)
      for (std::int64_t pad = 0; pad <= 2; ++pad) {
        ConvCase c;
        c.n = 2, c.c = 4, c.k = 8, c.h = 5, c.w = 6, c.stride = Hw{s, 1}, c.pad = Padding::all(pad);
        c.kernel = Hw{c.h + 2 * pad + extra, 3};
        check_conv(c, d, n);
        c.layout = Layout::nhwc, c.dtype = DType::f16, c.kernel = Hw{3, c.w + 2 * pad + extra}, c.stride = Hw{1, s};
        check_conv(c, d, n);
      }
  for (std::int64_t k = 1; k <= 7; ++k) {
    ConvCase c;
    c.c = 3, c.k = 4, c.h = 9, c.w = 7, c.kernel = Hw{k, 8 - k}, c.pad = Padding::same_size(), c.dilation = Hw{1 + k % 3, 1};
    check_conv(c, d, n);
  }
  Rng rng(0x6b696c6eULL);
  for (int i = 0; i < 20000; ++i) check_conv(random_conv(rng), d, n);

  const double secs = seconds_since(t0);
  const std::string line = fmt::format(
      "{} cases, kiln accepted {} and rejected {} ({} by a kiln-only rule); cuDNN graph API refusal checks {}, not "
      "expressible {}; legacy checks {}, blind to K % groups {}; same {}, asymmetric {}, grouped {}, dilated {}, fp16/bf16 {}, "
      "nhwc {}",
      n.cases, n.accepted, n.rejected, n.kiln_only, n.graph_refusals, n.graph_not_expressible, n.legacy, n.legacy_blind, n.same,
      n.asymmetric, n.grouped, n.dilated, n.half, n.nhwc);
  print_counts("conv", line, secs);
  RecordProperty("cases", n.cases);
  RecordProperty("accepted", n.accepted);
  RecordProperty("rejected", n.rejected);
  EXPECT_GT(n.accepted, 2000);
  EXPECT_GT(n.rejected, 500);
  EXPECT_GT(n.graph_refusals, 300);
  EXPECT_GT(n.legacy, 2000);
  EXPECT_GT(n.asymmetric, 500);
  EXPECT_GT(n.same, 300);
  EXPECT_GT(n.grouped, 1000);
  d.finish("conv");
}

// ---- the shipped models -----------------------------------------------------------------

// From CMake, not __FILE__: a compiler launcher (ccache with CCACHE_BASEDIR) makes __FILE__
// relative to the build folder, and ctest runs this from another.
std::filesystem::path repo_root() { return KILN_SOURCE_DIR; }

TEST(CudnnCrossCheck, ShippedModelsCompileForEveryDtypeAndLayout) {
  for (const char* model : {"cifar_quick", "resnet20", "airbench"}) {
    const auto file = repo_root() / "data" / "models" / (std::string(model) + ".yaml");
    ASSERT_TRUE(std::filesystem::exists(file)) << file;
    const kiln::Spec spec = kiln::load_spec(file.string());
    for (DType dtype : {DType::f32, DType::f16, DType::bf16})
      for (Layout layout : {Layout::nchw, Layout::nhwc}) {
        SCOPED_TRACE(fmt::format("{} {} {}", model, kiln::to_string(dtype), kiln::to_string(layout)));
        kiln::CudnnReport report;
        try {
          report = kiln::compile_cudnn(spec.graph, kiln::Target{kiln::Backend::cuda, 128, dtype, layout});
        } catch (const kiln::GraphError& e) {
          std::string all;
          for (const auto& diag : e.diagnostics()) all += diag.format();
          FAIL() << "compile_cudnn rejects it:\n" << all;
        }
        EXPECT_GT(report.tensors, 0);
        EXPECT_GT(report.operations, 0);
        ASSERT_EQ(report.layers.size(), spec.graph.layers().size());
        int convs = 0;
        for (std::size_t i = 0; i < report.layers.size(); ++i) {
          if (spec.graph.layers()[i].op != kiln::OpKind::conv) continue;
          ++convs;
          EXPECT_EQ(report.layers[i].path.rfind("graph API: conv", 0), 0u)
              << report.layers[i].layer << ": " << report.layers[i].path;
        }
        EXPECT_GT(convs, 0);
        // Three operations (fwd, bwd-data, bwd-filter) per convolution at least.
        EXPECT_GE(report.operations, 3 * convs);
      }
  }
}

}  // namespace
