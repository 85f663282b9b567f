#pragma once

// Convolutions through oneDNN (Debian's libdnnl, the library under PyTorch's CPU
// convolutions): the CPU backend's second conv kernel, chosen per layer and pass where it
// beats im2col + kiln's GEMM (see conv.cpp, choose()). kiln's tensors stay as they are (NCHW
// or NHWC activations, OIHW weights); each call reorders them into the blocked formats
// oneDNN's JIT kernels prefer, in the layer's workspace, and back. Without oneDNN in the
// build, available() is false and nothing here is called.
#include <cstdint>
#include <string>

namespace kiln::detail::onednn {

// One convolution's geometry: PyTorch's Conv2d with explicit padding on each side.
struct ConvShape {
  std::int64_t n = 0, c = 0, h = 0, w = 0;  // input
  std::int64_t co = 0, oh = 0, ow = 0;      // output
  std::int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;
  std::int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  std::int64_t groups = 1;
  bool bias = false;
  bool nhwc = false;

  friend bool operator==(const ConvShape&, const ConvShape&) = default;
};

// Whether this build has oneDNN.
bool available();

// Whether oneDNN runs this convolution (every pass) in fp32; false without oneDNN.
bool supports(const ConvShape& shape, int threads);

// Workspace floats a forward or backward call needs at most (0 without oneDNN). A call that
// finds less uses memory of the calling thread's own, made once (no allocation per step).
std::int64_t workspace_floats(const ConvShape& shape, int threads);

// y = conv(x, w) + b (b may be nullptr), overwriting y.
void forward(const ConvShape& shape, int threads, const float* x, const float* w, const float* b, float* y,
             float* workspace, std::int64_t workspace_floats);

// dw = dL/dw (overwritten) and dx = dL/dx (added when accumulate), each skipped where nullptr.
// The bias gradient is kiln's own (see conv.cpp, bias_grad).
void backward(const ConvShape& shape, int threads, const float* x, const float* w, const float* dy, float* dw, float* dx,
              bool accumulate, float* workspace, std::int64_t workspace_floats);

// oneDNN's names for the kernels it runs: "jit:avx2" (forward, backward data, weights).
std::string describe(const ConvShape& shape, int threads);

}  // namespace kiln::detail::onednn
