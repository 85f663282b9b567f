#include "kiln/device.hpp"

#include <cuda_runtime.h>
#include <fmt/format.h>

namespace kiln {

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return count;
}

std::string cuda_unavailable_reason() {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return fmt::format("no CUDA device: {} ({})", cudaGetErrorString(e), cudaGetErrorName(e));
  }
  if (count == 0) return "no CUDA device found";
  return {};
}

}  // namespace kiln
