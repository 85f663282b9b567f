#pragma once

// KILN_HD marks math written once for both backends: the CPU backend calls these functions
// in loops, the CUDA kernels call them per thread, and the host tests cover both (as
// CUTLASS_HOST_DEVICE does).
#if defined(__CUDACC__)
#define KILN_HD __host__ __device__ __forceinline__
#else
#define KILN_HD inline
#endif
