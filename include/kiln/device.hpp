#pragma once

#include <string>

#include "kiln/export.hpp"

namespace kiln {

/// Number of CUDA devices this process can use: 0 without a GPU, without a driver, or when
/// kiln was built without CUDA. Never throws.
KILN_API int cuda_device_count();

/// Why there is no usable CUDA device, in words ("built without CUDA", or the runtime's
/// message); empty when there is one.
KILN_API std::string cuda_unavailable_reason();

}  // namespace kiln
