#include "cuda/memory.hpp"

#include <fmt/format.h>

#include "kiln/error.hpp"
#include "kiln/format.hpp"

namespace kiln::cuda {

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  cudaError_t e = cudaMalloc(&ptr_, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    ptr_ = nullptr;
    std::size_t free = 0, total = 0;
    cudaMemGetInfo(&free, &total);
    throw DeviceError(fmt::format("out of device memory: cudaMalloc of {} ({} bytes) failed ({}); the device has {} free of {}",
                                  format_bytes(static_cast<std::int64_t>(bytes)), bytes, cudaGetErrorString(e),
                                  format_bytes(static_cast<std::int64_t>(free)), format_bytes(static_cast<std::int64_t>(total))));
  }
}

}  // namespace kiln::cuda
