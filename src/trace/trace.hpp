#pragma once

// NVTX ranges in the `kiln` domain around every layer's forward and backward, the
// optimizer, data work and evaluation, on every backend: Nsight Systems shows them on a
// GPU, and the NVTX test records them on the host through an injection library. NVTX3 is
// header-only and costs a branch when no tool listens; without its headers this is a no-op.
namespace kiln::trace {

#if KILN_HAVE_NVTX
void push(const char* name);
void pop();
#else
inline void push(const char*) {}
inline void pop() {}
#endif

// Starts (true) or stops (false) the CUDA profiler's capture: what `nsys profile
// --capture-range=cudaProfilerApi` records (cudaProfilerStart/Stop). Nothing without CUDA.
void capture(bool on);

// Names must outlive the range (string literals, or names precomputed per layer).
class Range {
 public:
  explicit Range(const char* name) { push(name); }
  ~Range() { pop(); }
  Range(const Range&) = delete;
  Range& operator=(const Range&) = delete;
};

}  // namespace kiln::trace
