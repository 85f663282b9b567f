// Channel concatenation (one part at a time) and the flatten of an NHWC tensor into
// PyTorch's channel-major feature order. One thread per element of the buffer written, so
// writes are coalesced and no two threads write the same element.
#include <cstdint>

#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/kernels/launch.cuh"

namespace kiln::cuda {

namespace {

__global__ void concat_forward_kernel(const float* part, Dims4 part_dims, float* whole, Dims4 whole_dims,
                                      std::int64_t channel_offset, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const math::Index4 e = math::index_of(part_dims, i);
    whole[whole_dims.at(e.n, e.c + channel_offset, e.h, e.w)] = part[i];
  }
}

__global__ void concat_backward_kernel(const float* dwhole, Dims4 whole_dims, float* dpart, Dims4 part_dims,
                                       std::int64_t channel_offset, bool accumulate, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const math::Index4 e = math::index_of(part_dims, i);
    const float v = dwhole[whole_dims.at(e.n, e.c + channel_offset, e.h, e.w)];
    dpart[i] = accumulate ? dpart[i] + v : v;
  }
}

// y (NCHW order) from x (laid out as `dims`): y[i] is element (n, c, h, w) of x. A
// permutation: x and y must not alias (nor dy and dx below).
__global__ void to_nchw_kernel(const float* x, Dims4 dims, float* y, std::int64_t count) {
  Dims4 nchw = dims;
  nchw.nhwc = false;
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const math::Index4 e = math::index_of(nchw, i);
    y[i] = x[dims.at(e.n, e.c, e.h, e.w)];
  }
}

// dx (laid out as `dims`) from dy (NCHW order).
__global__ void from_nchw_kernel(const float* dy, Dims4 dims, float* dx, bool accumulate, std::int64_t count) {
  Dims4 nchw = dims;
  nchw.nhwc = false;
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    const math::Index4 e = math::index_of(dims, i);
    const float v = dy[nchw.at(e.n, e.c, e.h, e.w)];
    dx[i] = accumulate ? dx[i] + v : v;
  }
}

}  // namespace

void concat_forward_part(const float* part, const Dims4& part_dims, float* whole, const Dims4& whole_dims,
                         std::int64_t channel_offset, cudaStream_t s) {
  const std::int64_t count = part_dims.count();
  if (count <= 0) return;
  concat_forward_kernel<<<grid_for(count), kThreads, 0, s>>>(part, part_dims, whole, whole_dims, channel_offset, count);
  KILN_CUDA_LAUNCH_CHECK();
}

void concat_backward_part(const float* dwhole, const Dims4& whole_dims, float* dpart, const Dims4& part_dims,
                          std::int64_t channel_offset, bool accumulate, cudaStream_t s) {
  const std::int64_t count = part_dims.count();
  if (count <= 0 || !dpart) return;
  concat_backward_kernel<<<grid_for(count), kThreads, 0, s>>>(dwhole, whole_dims, dpart, part_dims, channel_offset,
                                                              accumulate, count);
  KILN_CUDA_LAUNCH_CHECK();
}

void nhwc_to_nchw(const float* x, const Dims4& dims, float* y, cudaStream_t s) {
  const std::int64_t count = dims.count();
  if (count <= 0) return;
  to_nchw_kernel<<<grid_for(count), kThreads, 0, s>>>(x, dims, y, count);
  KILN_CUDA_LAUNCH_CHECK();
}

void nchw_to_nhwc_grad(const float* dy, const Dims4& dims, float* dx, bool accumulate, cudaStream_t s) {
  const std::int64_t count = dims.count();
  if (count <= 0 || !dx) return;
  from_nchw_kernel<<<grid_for(count), kThreads, 0, s>>>(dy, dims, dx, accumulate, count);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
