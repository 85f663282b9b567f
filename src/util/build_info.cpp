#include <fmt/format.h>

#include "backend/executor.hpp"
#include "kiln/cudnn.hpp"
#include "kiln/device.hpp"
#include "trace/trace.hpp"

namespace kiln {

bool built_with_cuda() {
#if KILN_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

std::string build_description() {
  const char* cpu = KILN_HAVE_ONEDNN ? ", oneDNN" : "";
#if KILN_HAVE_CUDA
  return fmt::format("CUDA {}, cuDNN {}, cuBLAS{}", KILN_CUDA_VERSION_STRING, KILN_CUDNN_VERSION_STRING, cpu);
#else
  return fmt::format("CPU only{}", cpu);
#endif
}

#if !KILN_HAVE_CUDA
namespace detail {
std::unique_ptr<Executor> make_cuda_executor(const Graph&, std::int64_t, const CudaOptions&) {
  throw DeviceError("--device cuda: this kiln was built without CUDA; rebuild with the CUDA toolkit and cuDNN, or use --device cpu");
}
}  // namespace detail

int cuda_device_count() { return 0; }

namespace trace {
void capture(bool) {}
}  // namespace trace

std::string cuda_unavailable_reason() { return "this kiln was built without CUDA"; }

std::vector<DeviceInfo> cuda_devices() { return {}; }

std::vector<std::string> cudnn_unsupported(const Graph&, const Target&) {
  throw DeviceError("this kiln was built without CUDA");
}

std::vector<std::string> cudnn_fused_engines(const Graph&, const Target&) {
  throw DeviceError("this kiln was built without CUDA");
}

RuntimeInfo cuda_runtime_info() { return {}; }

CudnnReport compile_cudnn(const Graph&, const Target&) {
  throw DeviceError(
      "this kiln was built without CUDA (nvcc, cuDNN or cuBLAS not found at configure time), so it cannot compile for "
      "cuDNN; rebuild with the CUDA toolkit and cuDNN installed");
}
#endif

}  // namespace kiln
