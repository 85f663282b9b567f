#pragma once

// Helpers for the tests of kiln's own CUDA kernels (cuda/kernels.hpp) against the CPU
// backend: device buffers, NCHW <-> NHWC conversion on the host, element-wise comparison
// that names the first differing elements, and the three paths of a backward (overwrite a
// NaN-filled dx, accumulate into random values, dx null).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "kiln/device.hpp"
#include "math/layout.hpp"
#include "op_harness.hpp"

// Every GPU test starts with this: without a device it skips and says why.
#define KILN_REQUIRE_GPU()                                                                      \
  do {                                                                                          \
    if (::kiln::cuda_device_count() == 0) GTEST_SKIP() << ::kiln::cuda_unavailable_reason(); \
  } while (0)

namespace kiln::test {

// Waits for the device and surfaces any asynchronous kernel error as a DeviceError.
inline void sync() {
  KILN_CUDA_CHECK(cudaDeviceSynchronize());
  KILN_CUDA_CHECK(cudaGetLastError());
}

// An owned device array of T; every CUDA call checked; copies block.
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t count) : count_(count) {
    if (count_ > 0) KILN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data_), count_ * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() {
    if (data_) cudaFree(data_);  // never throws
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return data_; }
  std::size_t size() const { return count_; }

  void upload(const std::vector<T>& host) {
    if (host.size() != count_)
      throw std::logic_error("DeviceBuffer::upload: " + std::to_string(host.size()) + " values into " + std::to_string(count_));
    sync();
    if (count_ > 0) KILN_CUDA_CHECK(cudaMemcpy(data_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    sync();
    std::vector<T> host(count_);
    if (count_ > 0) KILN_CUDA_CHECK(cudaMemcpy(host.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

inline math::Dims4 dims_of(const Shape& s, std::int64_t n, bool nhwc) { return {n, s.c, s.h, s.w, nhwc}; }

inline const char* layout_name(bool nhwc) { return nhwc ? "NHWC" : "NCHW"; }

// d's layout back to NCHW (to_layout, from_layout(const float*) are in op_harness.hpp).
inline std::vector<float> from_layout(const std::vector<float>& v, const math::Dims4& d) { return from_layout(v.data(), d); }

// |got - want| <= atol + rtol * |want| element by element (atol = rtol = 0: equal), NaN
// only where `want` has NaN. On failure names the count, the worst element and the first
// few differing ones, with (n, c, h, w) when `d` is given (indices are in NCHW order).
template <class T>
void expect_near(const std::vector<T>& want, const std::vector<T>& got, double atol, double rtol, const std::string& what,
                 const math::Dims4* d = nullptr) {
  ASSERT_EQ(want.size(), got.size()) << what << ": sizes differ";
  auto where = [&](std::size_t i) {
    std::ostringstream s;
    s << "[" << i << "]";
    if (d && d->c > 0) {
      const auto e = static_cast<std::int64_t>(i);
      s << " (n " << e / (d->c * d->h * d->w) << ", c " << (e / (d->h * d->w)) % d->c << ", h " << (e / d->w) % d->h
        << ", w " << e % d->w << ")";
    }
    return s.str();
  };
  std::size_t bad = 0, worst = 0;
  double worst_excess = -1;
  std::ostringstream first;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double a = static_cast<double>(want[i]), b = static_cast<double>(got[i]);
    double excess = 0;
    if (std::isnan(a) || std::isnan(b))
      excess = std::isnan(a) && std::isnan(b) ? -1 : std::numeric_limits<double>::infinity();
    else
      excess = std::fabs(b - a) - (atol + rtol * std::fabs(a));
    if (excess > 0) {
      if (bad < 5) first << "\n    " << where(i) << ": got " << b << ", want " << a;
      ++bad;
      if (excess > worst_excess) worst_excess = excess, worst = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << want.size() << " elements differ (atol " << atol << ", rtol "
                     << rtol << "); worst " << where(worst) << ": got " << static_cast<double>(got[worst]) << ", want "
                     << static_cast<double>(want[worst]) << "; first:" << first.str();
}

// Checks a GPU backward, `run(dx, accumulate)` writing dx in d's layout, against the CPU
// layer's backward in `h` (input 0): over a NaN-filled dx, accumulating into random values,
// and with dx null (which must not fault). Restores h's bindings.
template <class Run>
void check_dx(OpHarness& h, const math::Dims4& d, double atol, double rtol, Run run) {
  const std::size_t size = h.dx[0].size();
  h.bind();
  std::fill(h.dx[0].begin(), h.dx[0].end(), kNaN);
  h.backward();
  const std::vector<float> want = h.dx[0];
  DeviceBuffer<float> dx(std::vector<float>(size, kNaN));
  run(dx.get(), false);
  expect_near(want, from_layout(dx.download(), d), atol, rtol, "dx", &d);

  const std::vector<float> before = h.random(static_cast<std::int64_t>(size));
  std::copy(before.begin(), before.end(), h.dx[0].begin());
  h.bind();
  h.cpu.accumulate[0] = true;
  h.backward();
  const std::vector<float> want_sum = h.dx[0];
  dx.upload(to_layout(before, d));
  run(dx.get(), true);
  expect_near(want_sum, from_layout(dx.download(), d), atol, rtol, "accumulated dx", &d);
  h.bind();

  run(nullptr, false);
  sync();
}

}  // namespace kiln::test
