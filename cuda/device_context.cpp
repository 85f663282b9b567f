#include "cuda/device_context.hpp"

#include <fmt/format.h>

#include "cuda/check.hpp"
#include "kiln/device.hpp"
#include "kiln/error.hpp"

namespace kiln::cuda {

namespace {

// Runs before any member touches the device: a machine without a GPU or driver gets kiln's
// message, not the CUDA runtime's error from creating a stream.
int select_device(const detail::CudaOptions& options) {
  const int count = cuda_device_count();
  if (count == 0)
    throw DeviceError(fmt::format("--device cuda: {}; train on the CPU with --device cpu", cuda_unavailable_reason()));
  if (options.device >= count)
    throw DeviceError(fmt::format("--device cuda:{}: no such device; this machine has {} (cuda:0{}; kiln info lists them)",
                                  options.device, count == 1 ? "one" : std::to_string(count),
                                  count == 1 ? "" : fmt::format(" to cuda:{}", count - 1)));
  KILN_CUDA_CHECK(cudaSetDevice(options.device));
  return options.device;
}

std::string device_name(int index) {
  cudaDeviceProp prop{};
  KILN_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return prop.name;
}

}  // namespace

DeviceContext::DeviceContext(const detail::CudaOptions& options)
    : index_(select_device(options)),
      name_(device_name(index_)),
      cudnn_(make_cudnn_handle(stream_.get())),
      cublas_(make_cublas_handle(stream_.get())) {
  // cuBLAS keeps fp32 GEMMs in fp32 unless told otherwise, but NVIDIA_TF32_OVERRIDE or a
  // library default could change that: state the choice, as cuDNN's engine filter does. In
  // bf16/fp16 cuBLAS may otherwise reduce split-K partial sums in the half type; kiln's
  // GEMMs accumulate in fp32 (the CPU oracle's arithmetic), so that is disallowed.
  const auto math = static_cast<cublasMath_t>((options.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH) |
                                              CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  KILN_CUBLAS_CHECK(cublasSetMathMode(cublas_.get(), math));
  int major = 0;
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index_));
  cublas_workspace_ = DeviceBuffer(std::size_t{major >= 9 ? 32u : 4u} << 20);
  KILN_CUBLAS_CHECK(cublasSetWorkspace(cublas_.get(), cublas_workspace_.data(), cublas_workspace_.bytes()));
}

DeviceContext::~DeviceContext() {
  if (stream_.get()) cudaStreamSynchronize(stream_.get());
}

}  // namespace kiln::cuda
