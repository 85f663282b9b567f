#pragma once

/// @file
/// What CUDA devices and libraries this process can use. Every function here works, and
/// reports no device, in a build without CUDA.

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/export.hpp"

namespace kiln {

/// Number of CUDA devices this process can use: 0 without a GPU, without a driver, or when
/// kiln was built without CUDA. Never throws.
KILN_API int cuda_device_count();

/// Why there is no usable CUDA device, in words ("built without CUDA", or the runtime's
/// message); empty when there is one.
KILN_API std::string cuda_unavailable_reason();

/// One CUDA device as the runtime reports it.
struct DeviceInfo {
  int index = 0;                   ///< the CUDA device ordinal
  std::string name;                ///< "NVIDIA H100 80GB HBM3"
  int major = 0;                   ///< compute capability, major
  int minor = 0;                   ///< compute capability, minor
  std::int64_t memory_bytes = 0;   ///< total device memory
  std::int64_t free_bytes = 0;     ///< free device memory when queried
  int multiprocessors = 0;         ///< streaming multiprocessors
};

/// Versions of the CUDA driver and of the libraries loaded at run time ("13.0", "9.19.0").
struct RuntimeInfo {
  std::string driver;   ///< the CUDA version the driver supports
  std::string runtime;  ///< the CUDA runtime loaded
  std::string cudnn;    ///< the cuDNN library loaded
  std::string cublas;   ///< the cuBLAS library loaded
};

/// Every CUDA device (empty without one, or without CUDA). Never throws.
KILN_API std::vector<DeviceInfo> cuda_devices();
/// Never throws; fields are empty where unknown.
KILN_API RuntimeInfo cuda_runtime_info();

}  // namespace kiln
