// Max and average pooling (PyTorch's, ceil mode included) and global pooling, NCHW or NHWC.
// The windows are math/pool.hpp's pool_span; the scans are math/pool_strided.hpp's, which
// read a plane with a row and a column stride and equal max_offset / avg_window for NCHW.
//
// Backward gathers instead of scattering: one thread per input element visits, in the
// CPU's (oh, ow) order, the windows that contain it, so there are no atomics, the result is
// deterministic, and it adds the same terms in the same order as the CPU kernel.
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/launch.cuh"
#include "math/pool.hpp"
#include "math/pool_strided.hpp"

namespace kiln::cuda {

namespace {

// The (n, c) plane of a tensor: element (r, col) is at base + r * row + col * column.
struct Plane {
  std::int64_t base, row, column;
};

__device__ Plane plane_of(const Dims4& d, std::int64_t n, std::int64_t c) {
  return {d.at(n, c, 0, 0), d.nhwc ? d.w * d.c : d.w, d.nhwc ? d.c : 1};
}

template <class T>
__global__ void pool_forward_kernel(bool max, const T* x, Dims4 in, T* y, Dims4 out, PoolGeometry g,
                                    std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const math::Index4 o = math::index_of(out, i);
    const math::PoolSpan rows = math::pool_span(o.h, g.kernel_h, g.stride_h, g.pad_h, in.h);
    const math::PoolSpan cols = math::pool_span(o.w, g.kernel_w, g.stride_w, g.pad_w, in.w);
    const Plane p = plane_of(in, o.n, o.c);
    const T* plane = x + p.base;
    y[i] = max ? plane[math::max_offset_strided(plane, p.row, p.column, rows, cols)]
               : st<T>(math::avg_window_strided(plane, p.row, p.column, rows, cols));
  }
}

template <class T>
__global__ void pool_backward_kernel(bool max, const T* x, Dims4 in, const T* dy, Dims4 out, T* dx,
                                     bool accumulate, PoolGeometry g, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const math::Index4 e = math::index_of(in, i);
    const Plane p = plane_of(in, e.n, e.c);
    const T* plane = x + p.base;
    const std::int64_t mine = e.h * p.row + e.w * p.column;  // this element's offset in its plane
    const math::PoolCover oh = math::pool_cover(e.h, g.kernel_h, g.stride_h, g.pad_h, out.h);
    const math::PoolCover ow = math::pool_cover(e.w, g.kernel_w, g.stride_w, g.pad_w, out.w);
    float acc = accumulate ? ld(dx[i]) : 0.0f;
    for (std::int64_t r = oh.first; r <= oh.last; ++r) {
      const math::PoolSpan rows = math::pool_span(r, g.kernel_h, g.stride_h, g.pad_h, in.h);
      if (e.h < rows.begin || e.h >= rows.end) continue;
      for (std::int64_t c = ow.first; c <= ow.last; ++c) {
        const math::PoolSpan cols = math::pool_span(c, g.kernel_w, g.stride_w, g.pad_w, in.w);
        if (e.w < cols.begin || e.w >= cols.end) continue;
        const float d = ld(dy[out.at(e.n, e.c, r, c)]);
        if (max) {
          if (math::max_offset_strided(plane, p.row, p.column, rows, cols) == mine) acc += d;
        } else {
          acc += d / static_cast<float>(rows.extent * cols.extent);
        }
      }
    }
    dx[i] = st<T>(acc);
  }
}

// One thread per (n, c) plane; y is [n, c] in either layout. Avg sums in double in the
// plane's row-major order, as the CPU does.
template <class T>
__global__ void global_forward_kernel(bool max, const T* x, Dims4 in, T* y, std::int64_t planes) {
  const math::PoolSpan rows{0, in.h, in.h}, cols{0, in.w, in.w};
  for (std::int64_t q = first_index(); q < planes; q += grid_stride()) {
    const Plane p = plane_of(in, q / in.c, q % in.c);
    const T* plane = x + p.base;
    if (max) {
      y[q] = plane[math::max_offset_strided(plane, p.row, p.column, rows, cols)];
    } else {
      double sum = 0.0;
      for (std::int64_t r = 0; r < in.h; ++r)
        for (std::int64_t c = 0; c < in.w; ++c) sum += ld(plane[r * p.row + c * p.column]);
      y[q] = st<T>(static_cast<float>(sum / static_cast<double>(in.h * in.w)));
    }
  }
}

// Max: one thread per plane finds the first maximum again and writes the whole plane.
template <class T>
__global__ void global_max_backward_kernel(const T* x, Dims4 in, const T* dy, T* dx, bool accumulate,
                                           std::int64_t planes) {
  const math::PoolSpan rows{0, in.h, in.h}, cols{0, in.w, in.w};
  for (std::int64_t q = first_index(); q < planes; q += grid_stride()) {
    const Plane p = plane_of(in, q / in.c, q % in.c);
    const std::int64_t best = math::max_offset_strided(x + p.base, p.row, p.column, rows, cols);
    T* plane = dx + p.base;
    const float d = ld(dy[q]);
    if (accumulate) {
      plane[best] = st<T>(ld(plane[best]) + d);
    } else {
      for (std::int64_t r = 0; r < in.h; ++r)
        for (std::int64_t c = 0; c < in.w; ++c) {
          const std::int64_t o = r * p.row + c * p.column;
          plane[o] = st<T>(o == best ? d : 0.0f);
        }
    }
  }
}

// Avg: one thread per input element.
template <class T>
__global__ void global_avg_backward_kernel(Dims4 in, const T* dy, T* dx, bool accumulate, std::int64_t count) {
  const float size = static_cast<float>(in.h * in.w);
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const math::Index4 e = math::index_of(in, i);
    put(dx[i], ld(dy[e.n * in.c + e.c]) / size, accumulate);
  }
}

}  // namespace

void pool_forward(DType t, bool max, const void* x, const Dims4& in, void* y, const Dims4& out, const PoolGeometry& g,
                  cudaStream_t s) {
  const std::int64_t count = out.count();
  if (count <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    pool_forward_kernel<<<grid_for(count), kThreads, 0, s>>>(max, static_cast<const T*>(x), in, static_cast<T*>(y), out, g,
                                                             count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void pool_backward(DType t, bool max, const void* x, const Dims4& in, const void* dy, const Dims4& out, void* dx,
                   bool accumulate, const PoolGeometry& g, cudaStream_t s) {
  const std::int64_t count = in.count();
  if (count <= 0 || !dx) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    pool_backward_kernel<<<grid_for(count), kThreads, 0, s>>>(max, static_cast<const T*>(x), in, static_cast<const T*>(dy), out,
                                                              static_cast<T*>(dx), accumulate, g, count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void global_pool_forward(DType t, bool max, const void* x, const Dims4& in, void* y, cudaStream_t s) {
  const std::int64_t planes = in.n * in.c;
  if (planes <= 0 || in.h * in.w <= 0) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    global_forward_kernel<<<grid_for(planes), kThreads, 0, s>>>(max, static_cast<const T*>(x), in, static_cast<T*>(y), planes);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void global_pool_backward(DType t, bool max, const void* x, const Dims4& in, const void* dy, void* dx, bool accumulate,
                          cudaStream_t s) {
  const std::int64_t count = in.count();
  if (count <= 0 || !dx) return;
  with_dtype(t, [&](auto stored) {
    using T = typename decltype(stored)::type;
    const T* xs = static_cast<const T*>(x);
    const T* dys = static_cast<const T*>(dy);
    T* dxs = static_cast<T*>(dx);
    if (max)
      global_max_backward_kernel<<<grid_for(in.n * in.c), kThreads, 0, s>>>(xs, in, dys, dxs, accumulate, in.n * in.c);
    else
      global_avg_backward_kernel<<<grid_for(count), kThreads, 0, s>>>(in, dys, dxs, accumulate, count);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
