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
#include <gtest/gtest.h>

#include <cudnn.h>
#include <fmt/format.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "cuda/cudnn_backend.hpp"
#include "kiln/kiln.hpp"

// The legacy API is the independent oracle here, and cuDNN 9 marks all of it deprecated.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace {

using kiln::DType;
using kiln::Hw;
using kiln::Layout;
using kiln::Padding;
using Dims = std::array<std::int64_t, 4>;

// ---- test plumbing ----------------------------------------------------------------------

// Counts every disagreement, prints the first few in full: one bad rule must not bury the log.
class Disagreements {
 public:
  static constexpr int kMaxPrinted = 20;
  template <class Describe>
  void expect(bool agree, Describe&& describe) {
    if (agree) return;
    if (++count_ <= kMaxPrinted) ADD_FAILURE() << describe();
  }
  void finish(const char* sweep) const {
    EXPECT_EQ(count_, 0) << sweep << ": " << count_ << " disagreements in all; the first " << kMaxPrinted
                         << " are printed above";
  }

 private:
  int count_ = 0;
};

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : gen_(seed) {}
  std::int64_t below(std::int64_t n) { return static_cast<std::int64_t>(gen_() % static_cast<std::uint64_t>(n)); }
  std::int64_t in(std::int64_t lo, std::int64_t hi) { return lo + below(hi - lo + 1); }
  bool chance(int num, int den) { return below(den) < num; }
  template <class T>
  T pick(std::initializer_list<T> xs) { return *(xs.begin() + below(static_cast<std::int64_t>(xs.size()))); }

 private:
  std::mt19937_64 gen_;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string dims_str(const Dims& d) { return fmt::format("[{},{},{},{}]", d[0], d[1], d[2], d[3]); }
std::string hw_str(Hw v) { return fmt::format("{}x{}", v.h, v.w); }
std::string pad_str(const Padding& p) {
  return p.same ? "same" : fmt::format("{},{},{},{} (t,b,l,r)", p.top, p.bottom, p.left, p.right);
}

// PyTorch's floor((a) / b) for possibly negative a.
std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// What kiln says about a one-layer model: the layer (attrs resolved) or every diagnostic.
struct KilnVerdict {
  std::optional<kiln::Layer> layer;
  std::string diagnostics;
  bool only_layer_errors = true;  // every error names the layer under test
};

KilnVerdict kiln_verdict(kiln::Shape input, kiln::LayerDef def) {
  def.named("probe");
  kiln::GraphBuilder b("cross_check", input, 2);
  b.add(std::move(def)).add(kiln::layers::flatten()).add(kiln::layers::linear(2));
  KilnVerdict v;
  try {
    kiln::Graph g = b.build();
    v.layer = g.layers()[1];
  } catch (const kiln::GraphError& e) {
    for (const auto& d : e.diagnostics()) {
      v.diagnostics += d.format();
      if (d.severity == kiln::Severity::error && d.layer != "probe") v.only_layer_errors = false;
    }
  }
  return v;
}

// ---- legacy cuDNN oracle ----------------------------------------------------------------

struct DestroyTensor {
  void operator()(cudnnTensorDescriptor_t d) const noexcept { cudnnDestroyTensorDescriptor(d); }
};
struct DestroyFilter {
  void operator()(cudnnFilterDescriptor_t d) const noexcept { cudnnDestroyFilterDescriptor(d); }
};
struct DestroyConv {
  void operator()(cudnnConvolutionDescriptor_t d) const noexcept { cudnnDestroyConvolutionDescriptor(d); }
};
struct DestroyPool {
  void operator()(cudnnPoolingDescriptor_t d) const noexcept { cudnnDestroyPoolingDescriptor(d); }
};
using LegacyTensor = std::unique_ptr<cudnnTensorStruct, DestroyTensor>;
using LegacyFilter = std::unique_ptr<cudnnFilterStruct, DestroyFilter>;
using LegacyConv = std::unique_ptr<cudnnConvolutionStruct, DestroyConv>;
using LegacyPool = std::unique_ptr<cudnnPoolingStruct, DestroyPool>;

// The legacy API's output dims, or the first status that was not success.
struct LegacyAnswer {
  cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
  std::array<int, 4> dims{};
  bool refused() const { return status != CUDNN_STATUS_SUCCESS || dims[2] <= 0 || dims[3] <= 0; }
  bool equals(const Dims& d) const {
    return status == CUDNN_STATUS_SUCCESS && dims[0] == d[0] && dims[1] == d[1] && dims[2] == d[2] && dims[3] == d[3];
  }
  std::string str() const {
    if (status != CUDNN_STATUS_SUCCESS) return fmt::format("refused: {}", cudnnGetErrorString(status));
    return fmt::format("[{},{},{},{}]", dims[0], dims[1], dims[2], dims[3]);
  }
};

cudnnTensorFormat_t legacy_format(Layout l) { return l == Layout::nchw ? CUDNN_TENSOR_NCHW : CUDNN_TENSOR_NHWC; }

// Creates a legacy descriptor owned from the start, so nothing leaks whichever call refuses.
template <class Owner, class Raw>
cudnnStatus_t create(Owner& out, cudnnStatus_t (*create_fn)(Raw*)) {
  Raw raw = nullptr;
  cudnnStatus_t s = create_fn(&raw);
  if (s == CUDNN_STATUS_SUCCESS) out.reset(raw);
  return s;
}

// Runs legacy calls in order until one refuses; the first refusal is cuDNN's answer.
struct Chain {
  cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
  template <class Call>
  Chain& then(Call&& call) {
    if (status == CUDNN_STATUS_SUCCESS) status = call();
    return *this;
  }
};

int narrow(std::int64_t v) { return static_cast<int>(v); }

cudnnStatus_t set_tensor(const LegacyTensor& t, const Dims& d, DType dtype, Layout layout) {
  return cudnnSetTensor4dDescriptor(t.get(), legacy_format(layout), kiln::cuda::cudnn_type(dtype), narrow(d[0]), narrow(d[1]),
                                    narrow(d[2]), narrow(d[3]));
}

LegacyAnswer legacy_conv(const Dims& x, const Dims& w, Padding pad, Hw stride, Hw dilation, std::int64_t groups, DType dtype,
                         Layout layout) {
  LegacyTensor xd;
  LegacyFilter wd;
  LegacyConv cd;
  LegacyAnswer a;
  a.status = Chain()
                 .then([&] { return create(xd, cudnnCreateTensorDescriptor); })
                 .then([&] { return set_tensor(xd, x, dtype, layout); })
                 .then([&] { return create(wd, cudnnCreateFilterDescriptor); })
                 .then([&] {
                   return cudnnSetFilter4dDescriptor(wd.get(), kiln::cuda::cudnn_type(dtype), legacy_format(layout),
                                                     narrow(w[0]), narrow(w[1]), narrow(w[2]), narrow(w[3]));
                 })
                 .then([&] { return create(cd, cudnnCreateConvolutionDescriptor); })
                 .then([&] {
                   return cudnnSetConvolution2dDescriptor(cd.get(), narrow(pad.top), narrow(pad.left), narrow(stride.h),
                                                          narrow(stride.w), narrow(dilation.h), narrow(dilation.w),
                                                          CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT);
                 })
                 .then([&] { return cudnnSetConvolutionGroupCount(cd.get(), narrow(groups)); })
                 .then([&] {
                   return cudnnGetConvolution2dForwardOutputDim(cd.get(), xd.get(), wd.get(), &a.dims[0], &a.dims[1],
                                                                &a.dims[2], &a.dims[3]);
                 })
                 .status;
  return a;
}

LegacyAnswer legacy_pool(bool max, const Dims& x, Hw kernel, Hw stride, Hw pad, DType dtype, Layout layout) {
  LegacyTensor xd;
  LegacyPool pd;
  LegacyAnswer a;
  const cudnnPoolingMode_t mode = max ? CUDNN_POOLING_MAX : CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING;
  a.status = Chain()
                 .then([&] { return create(xd, cudnnCreateTensorDescriptor); })
                 .then([&] { return set_tensor(xd, x, dtype, layout); })
                 .then([&] { return create(pd, cudnnCreatePoolingDescriptor); })
                 .then([&] {
                   return cudnnSetPooling2dDescriptor(pd.get(), mode, CUDNN_PROPAGATE_NAN, narrow(kernel.h), narrow(kernel.w),
                                                      narrow(pad.h), narrow(pad.w), narrow(stride.h), narrow(stride.w));
                 })
                 .then([&] {
                   return cudnnGetPooling2dForwardOutputDim(pd.get(), xd.get(), &a.dims[0], &a.dims[1], &a.dims[2], &a.dims[3]);
                 })
                 .status;
  return a;
}

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

void print_counts(const char* sweep, const std::string& line, double secs) {
  std::printf("[ sweep    ] %s: %s; %.2f s\n", sweep, line.c_str(), secs);
  std::fflush(stdout);
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

// ---- the shipped models -----------------------------------------------------------------

std::filesystem::path repo_root() {
  // This file is <repo>/tests/cudnn/cross_check_test.cpp.
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
}

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
