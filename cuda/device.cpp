#include "kiln/device.hpp"
#include "trace/trace.hpp"

#include <cublas_v2.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>
#include <cudnn.h>
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

std::vector<DeviceInfo> cuda_devices() {
  std::vector<DeviceInfo> out;
  int count = cuda_device_count();
  // cudaMemGetInfo reads the current device: each is made current in turn, and the one that
  // was current before is current again after.
  int current = 0;
  const bool had_current = count > 0 && cudaGetDevice(&current) == cudaSuccess;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    DeviceInfo d{i, p.name, p.major, p.minor, static_cast<std::int64_t>(p.totalGlobalMem), 0, p.multiProcessorCount};
    std::size_t free = 0, total = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free, &total) == cudaSuccess) d.free_bytes = static_cast<std::int64_t>(free);
    cudaGetLastError();
    out.push_back(d);
  }
  if (had_current) cudaSetDevice(current);
  cudaGetLastError();
  return out;
}

namespace trace {
void capture(bool on) {
  // Without a device (or a profiler) there is nothing to capture: errors are cleared, not raised.
  if (cuda_device_count() > 0) (void)(on ? cudaProfilerStart() : cudaProfilerStop());
  cudaGetLastError();
}
}  // namespace trace

RuntimeInfo cuda_runtime_info() {
  RuntimeInfo r;
  auto version = [](int v) { return fmt::format("{}.{}", v / 1000, (v % 1000) / 10); };
  int v = 0;
  if (cudaDriverGetVersion(&v) == cudaSuccess && v > 0) r.driver = version(v);
  if (cudaRuntimeGetVersion(&v) == cudaSuccess) r.runtime = version(v);
  cudaGetLastError();
  std::size_t c = cudnnGetVersion();  // e.g. 91900 for 9.19.0
  r.cudnn = fmt::format("{}.{}.{}", c / 10000, (c % 10000) / 100, c % 100);
  int major = 0, minor = 0, patch = 0;
  if (cublasGetProperty(MAJOR_VERSION, &major) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(MINOR_VERSION, &minor) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(PATCH_LEVEL, &patch) == CUBLAS_STATUS_SUCCESS)
    r.cublas = fmt::format("{}.{}.{}", major, minor, patch);
  return r;
}

}  // namespace kiln
