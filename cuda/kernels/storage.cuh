#pragma once

// The element types a plan stores activations in (kiln::DType): fp32, and bf16 and fp16 for
// mixed precision. Kernels are templates over the stored type T and compute in fp32: ld()
// widens a stored value, st<T>() rounds an fp32 result to T (to nearest, ties to even, as
// the CPU oracle's math/half.hpp rounds). with_dtype() picks T for a plan's DType at the
// launcher, the one place a kernel's type is chosen.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdexcept>
#include <string>

#include "kiln/types.hpp"

namespace kiln::cuda {

__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(__half v) { return __half2float(v); }
__device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__device__ __forceinline__ T st(float v);
template <>
__device__ __forceinline__ float st<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half st<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 st<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// `out = v`, or `out += v` in fp32 and stored once (the CPU oracle adds in fp32, then rounds).
// __fadd_rn is never merged with the multiply that produced v: a contracted v * k + out rounds
// once where the CPU rounds twice, and nvcc contracts only some unrolled copies of a loop, so
// two kernels computing the same v could accumulate it differently.
template <class T>
__device__ __forceinline__ void put(T& out, float v, bool accumulate) {
  out = st<T>(accumulate ? __fadd_rn(ld(out), v) : v);
}

template <class T>
struct Stored {
  using type = T;
};

// Calls f(Stored<T>{}) with T the storage type of `dtype`.
template <class F>
void with_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: f(Stored<float>{}); return;
    case DType::f16: f(Stored<__half>{}); return;
    case DType::bf16: f(Stored<__nv_bfloat16>{}); return;
  }
  throw std::invalid_argument("CUDA kernels: unknown dtype " + std::to_string(static_cast<int>(dtype)));
}

}  // namespace kiln::cuda
