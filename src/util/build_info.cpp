#include <fmt/format.h>

#include "kiln/cudnn.hpp"
#include "kiln/device.hpp"

namespace kiln {

bool built_with_cuda() {
#if KILN_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

std::string build_description() {
#if KILN_HAVE_CUDA
  return fmt::format("CUDA {}, cuDNN {}, cuBLAS", KILN_CUDA_VERSION_STRING, KILN_CUDNN_VERSION_STRING);
#else
  return "CPU only";
#endif
}

#if !KILN_HAVE_CUDA
int cuda_device_count() { return 0; }

std::string cuda_unavailable_reason() { return "this kiln was built without CUDA"; }

CudnnReport compile_cudnn(const Graph&, const Target&) {
  throw DeviceError(
      "this kiln was built without CUDA (nvcc, cuDNN or cuBLAS not found at configure time), so it cannot compile for "
      "cuDNN; rebuild with the CUDA toolkit and cuDNN installed");
}
#endif

}  // namespace kiln
