#pragma once

// 3x3 convolutions by Winograd's minimal filtering, F(4x4, 3x3) (Lavin and Gray, "Fast
// Algorithms for Convolutional Neural Networks", 2015): the CPU backend's third conv kernel,
// for the forward pass and the input gradient of 3x3, stride-1, 'same' (pad 1) convolutions
// without groups or dilation in NCHW, the bulk of ResNet's work. Each 4x4 output tile is
// computed from a 6x6 input tile with 36 multiplications per input and output channel
// instead of 144 (a quarter of the products), the input and the filters transformed into
// the Winograd domain and the products summed over channels as 36 GEMMs on kiln's GEMM
// kernel. The input gradient of such a conv is the same conv of dY with the filters rotated
// by 180 degrees and the channels swapped, so one routine runs both; the weight gradient is
// the forward's transpose, 36 GEMMs summing over the tiles. See conv_winograd.cpp for the
// numbers and the threading.
#include <cstdint>

#include "layers/conv_onednn.hpp"

namespace kiln::detail::winograd {

using onednn::ConvShape;

// Whether this kernel computes the conv: 3x3, stride 1, dilation 1, padding 1 on every side,
// no groups, NCHW.
bool applies(const ConvShape& shape);

// Workspace floats a call needs with `threads` threads: the transformed filters and each
// thread's transformed tiles and products. A call that finds less uses memory of the calling
// thread's own, made once.
std::int64_t workspace_floats(const ConvShape& shape, int threads);

// y = conv(x, w) + b (b may be nullptr), overwriting y.
void forward(const ConvShape& shape, int threads, const float* x, const float* w, const float* b, float* y,
             float* workspace, std::int64_t workspace_floats);

// dx = dL/dx, added to dx when accumulate.
void backward_data(const ConvShape& shape, int threads, const float* w, const float* dy, float* dx, bool accumulate,
                   float* workspace, std::int64_t workspace_floats);

// dw = dL/dw, overwritten: the forward's transpose (conv_winograd.cpp).
void backward_weights(const ConvShape& shape, int threads, const float* x, const float* dy, float* dw, float* workspace,
                      std::int64_t workspace_floats);

}  // namespace kiln::detail::winograd
