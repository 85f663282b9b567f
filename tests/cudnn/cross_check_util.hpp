#pragma once

// Shared by the cuDNN cross-check tests (cross_check_test.cpp: convolution and the shipped
// models; pool_cross_check_test.cpp: pooling): test plumbing and the legacy cuDNN oracle.
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

namespace kiln_xcheck {

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

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

inline std::string dims_str(const Dims& d) { return fmt::format("[{},{},{},{}]", d[0], d[1], d[2], d[3]); }
inline std::string hw_str(Hw v) { return fmt::format("{}x{}", v.h, v.w); }
inline std::string pad_str(const Padding& p) {
  return p.same ? "same" : fmt::format("{},{},{},{} (t,b,l,r)", p.top, p.bottom, p.left, p.right);
}

// PyTorch's floor((a) / b) for possibly negative a.
inline std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// What kiln says about a one-layer model: the layer (attrs resolved) or every diagnostic.
struct KilnVerdict {
  std::optional<kiln::Layer> layer;
  std::string diagnostics;
  bool only_layer_errors = true;  // every error names the layer under test
};

inline KilnVerdict kiln_verdict(kiln::Shape input, kiln::LayerDef def) {
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

inline cudnnTensorFormat_t legacy_format(Layout l) { return l == Layout::nchw ? CUDNN_TENSOR_NCHW : CUDNN_TENSOR_NHWC; }

// Creates a legacy descriptor owned from the start, so nothing leaks whichever call refuses.
template <class Owner, class Raw>
inline cudnnStatus_t create(Owner& out, cudnnStatus_t (*create_fn)(Raw*)) {
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

inline int narrow(std::int64_t v) { return static_cast<int>(v); }

inline cudnnStatus_t set_tensor(const LegacyTensor& t, const Dims& d, DType dtype, Layout layout) {
  return cudnnSetTensor4dDescriptor(t.get(), legacy_format(layout), kiln::cuda::cudnn_type(dtype), narrow(d[0]), narrow(d[1]),
                                    narrow(d[2]), narrow(d[3]));
}

inline LegacyAnswer legacy_conv(const Dims& x, const Dims& w, Padding pad, Hw stride, Hw dilation, std::int64_t groups, DType dtype,
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

inline LegacyAnswer legacy_pool(bool max, const Dims& x, Hw kernel, Hw stride, Hw pad, DType dtype, Layout layout) {
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

inline void print_counts(const char* sweep, const std::string& line, double secs) {
  std::printf("[ sweep    ] %s: %s; %.2f s\n", sweep, line.c_str(), secs);
  std::fflush(stdout);
}

}  // namespace kiln_xcheck
