// Element-wise kernels: activations, scale, dropout, copy/add, the n-ary add, fill. One thread per element
// in a grid-stride loop; each element reads and writes only its own index, so y == x (in
// place) is safe. The per-element math is math/activation.hpp's and math/dropout.hpp's.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/activation.cuh"
#include "cuda/kernels/launch.cuh"
#include "math/dropout.hpp"
#include "math/layout.hpp"

namespace kiln::cuda {

namespace {

// ---- activations (cuda/kernels/activation.cuh) -----------------------------------------

template <class F, class T>
__global__ void activation_forward_kernel(F f, const T* x, T* y, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) y[i] = st<T>(f.fwd(ld(x[i])));
}

template <class F, class T>
__global__ void activation_backward_kernel(F f, const T* saved, const T* dy, T* dx, bool accumulate, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) put(dx[i], f.bwd(ld(saved[i]), ld(dy[i])), accumulate);
}

template <class F>
void launch_forward(DType t, F f, const void* x, void* y, std::int64_t count, cudaStream_t s) {
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    activation_forward_kernel<<<grid_for(count), kThreads, 0, s>>>(f, static_cast<const T*>(x), static_cast<T*>(y), count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

template <class F>
void launch_backward(DType t, F f, const void* saved, const void* dy, void* dx, bool accumulate, std::int64_t count,
                     cudaStream_t s) {
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    activation_backward_kernel<<<grid_for(count), kThreads, 0, s>>>(f, static_cast<const T*>(saved), static_cast<const T*>(dy),
                                                                   static_cast<T*>(dx), accumulate, count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

// ---- the rest -------------------------------------------------------------------------

template <class T>
__global__ void scale_kernel(float factor, const T* in, T* out, bool accumulate, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) put(out[i], factor * ld(in[i]), accumulate);
}

template <class T>
__global__ void dropout_kernel(float p, float scale, DropoutKey k, const T* in, T* out, bool accumulate, math::Dims4 d) {
  const std::uint64_t key = k.step ? math::stream_key(*k.step, math::kStreamDropout, k.layer) : k.value;
  const std::int64_t count = d.count();
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const auto j = static_cast<std::uint64_t>(math::logical_index(d, i));
    put(out[i], ld(in[i]) * math::dropout_multiplier(key, j, p, scale), accumulate);
  }
}

template <class T>
__global__ void copy_or_add_kernel(const T* src, T* dst, bool accumulate, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    if (accumulate)
      dst[i] = st<T>(ld(dst[i]) + ld(src[i]));
    else
      dst[i] = src[i];
  }
}

template <class T>
struct AddInputs {
  const T* p[kAddInputs];
  int count;
};

template <class T>
__global__ void add_n_kernel(AddInputs<T> in, T* y, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    float sum = ld(in.p[0][i]);
    for (int k = 1; k < in.count; ++k) sum += ld(in.p[k][i]);
    y[i] = st<T>(sum);
  }
}

__global__ void fill_kernel(float* p, float value, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) p[i] = value;
}

// The CPU computes 1 / (1 - p) in double from the spec's p and rounds it once; so does this.
float dropout_scale(float p) { return static_cast<float>(1.0 / (1.0 - static_cast<double>(p))); }

void launch_scale(DType t, float factor, const void* in, void* out, bool accumulate, std::int64_t count, cudaStream_t s) {
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    scale_kernel<<<grid_for(count), kThreads, 0, s>>>(factor, static_cast<const T*>(in), static_cast<T*>(out), accumulate, count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void launch_dropout(DType t, float p, DropoutKey key, const void* in, void* out, bool accumulate, const Dims4& d,
                    cudaStream_t s) {
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    dropout_kernel<<<grid_for(d.count()), kThreads, 0, s>>>(p, dropout_scale(p), key, static_cast<const T*>(in),
                                                            static_cast<T*>(out), accumulate, d);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace

void activation_forward(DType t, OpKind op, float slope, const void* x, void* y, std::int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  with_activation("activation_forward", op, slope, [&](auto act) { launch_forward(t, act, x, y, count, s); });
}

void activation_backward(DType t, OpKind op, float slope, const void* saved, const void* dy, void* dx, bool accumulate,
                         std::int64_t count, cudaStream_t s) {
  if (count <= 0 || !dx) return;
  with_activation("activation_backward", op, slope,
                  [&](auto act) { launch_backward(t, act, saved, dy, dx, accumulate, count, s); });
}

void scale_forward(DType t, float factor, const void* x, void* y, std::int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  launch_scale(t, factor, x, y, false, count, s);
}

void scale_backward(DType t, float factor, const void* dy, void* dx, bool accumulate, std::int64_t count, cudaStream_t s) {
  if (count <= 0 || !dx) return;
  launch_scale(t, factor, dy, dx, accumulate, count, s);
}

void dropout_forward(DType t, float p, DropoutKey key, const void* x, void* y, const Dims4& d, cudaStream_t s) {
  if (d.count() <= 0) return;
  launch_dropout(t, p, key, x, y, false, d, s);
}

void dropout_backward(DType t, float p, DropoutKey key, const void* dy, void* dx, bool accumulate, const Dims4& d,
                      cudaStream_t s) {
  if (d.count() <= 0 || !dx) return;
  launch_dropout(t, p, key, dy, dx, accumulate, d, s);
}

void copy_or_add(DType t, const void* src, void* dst, bool accumulate, std::int64_t count, cudaStream_t s) {
  if (count <= 0 || !dst || (dst == src && !accumulate)) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    copy_or_add_kernel<<<grid_for(count), kThreads, 0, s>>>(static_cast<const T*>(src), static_cast<T*>(dst), accumulate, count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void add_n(DType t, std::span<void* const> x, void* y, std::int64_t count, cudaStream_t s) {
  if (count <= 0 || x.empty()) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    // Chunks of kAddInputs; after the first, the partial sum in y leads the next chunk.
    for (std::size_t next = 0; next < x.size();) {
      AddInputs<T> in{};
      if (next > 0) in.p[in.count++] = static_cast<const T*>(y);
      while (next < x.size() && in.count < static_cast<int>(kAddInputs)) in.p[in.count++] = static_cast<const T*>(x[next++]);
      add_n_kernel<<<grid_for(count), kThreads, 0, s>>>(in, static_cast<T*>(y), count);
      KILN_CUDA_LAUNCH_CHECK();
    }
  });
}

void fill(float* p, float value, std::int64_t count, cudaStream_t s) {
  if (count <= 0) return;
  fill_kernel<<<grid_for(count), kThreads, 0, s>>>(p, value, count);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
