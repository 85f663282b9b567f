#pragma once

// Launchers of kiln's own CUDA kernels (one op per file under cuda/kernels/), llm.c style:
// each takes device pointers, sizes and a stream, launches, and checks the launch. fp32
// activations in the plan's layout (math::Dims4); the element-wise and index math comes
// from the KILN_HD functions the CPU backend uses and the host tests cover.
//
// Backward launchers follow the CPU contract (src/backend/cpu_layer.hpp): dx may be
// nullptr (not needed), `accumulate` adds into dx instead of overwriting it, parameter
// gradients are overwritten (nullptr: not trainable, skip).
#include <cstdint>
#include <cuda_runtime.h>

#include "kiln/graph.hpp"
#include "math/augment.hpp"
#include "math/layout.hpp"
#include "math/sgd.hpp"

namespace kiln::cuda {

using math::Dims4;

// ---- element-wise (cuda/kernels/elementwise.cu) ----------------------------------------
// relu, leaky_relu, gelu, silu, sigmoid, tanh. Backward reads `saved`: the output y for
// relu/sigmoid/tanh, the input x for leaky_relu/gelu/silu (as OpDef::backward_needs).
void activation_forward(OpKind op, float slope, const float* x, float* y, std::int64_t count, cudaStream_t s);
void activation_backward(OpKind op, float slope, const float* saved, const float* dy, float* dx, bool accumulate,
                         std::int64_t count, cudaStream_t s);
void scale_forward(float factor, const float* x, float* y, std::int64_t count, cudaStream_t s);
void scale_backward(float factor, const float* dy, float* dx, bool accumulate, std::int64_t count, cudaStream_t s);
// Inverted dropout with the counter RNG (math/dropout.hpp): the mask of an element is
// random_uniform(key, j) >= p, j its logical NCHW index (math::logical_index) in either
// layout, identical to the CPU's for the same key.
void dropout_forward(float p, std::uint64_t key, const float* x, float* y, const Dims4& d, cudaStream_t s);
void dropout_backward(float p, std::uint64_t key, const float* dy, float* dx, bool accumulate, const Dims4& d,
                      cudaStream_t s);
// dx = dy, or dx += dy.
void copy_or_add(const float* src, float* dst, bool accumulate, std::int64_t count, cudaStream_t s);
// y = a + b (add of two inputs; more inputs are summed by calling it again with y as a).
void add2(const float* a, const float* b, float* y, std::int64_t count, cudaStream_t s);
void fill(float* p, float value, std::int64_t count, cudaStream_t s);

// ---- join (cuda/kernels/concat.cu) -------------------------------------------------------
// Copies `part` (channels [offset, offset + part.c) of `whole`) into or out of `whole`.
void concat_forward_part(const float* part, const Dims4& part_dims, float* whole, const Dims4& whole_dims,
                         std::int64_t channel_offset, cudaStream_t s);
void concat_backward_part(const float* dwhole, const Dims4& whole_dims, float* dpart, const Dims4& part_dims,
                          std::int64_t channel_offset, bool accumulate, cudaStream_t s);
// Flatten of an NHWC tensor into PyTorch's channel-major feature order, and back.
void nhwc_to_nchw(const float* x, const Dims4& dims, float* y, cudaStream_t s);
void nchw_to_nhwc_grad(const float* dy, const Dims4& dims, float* dx, bool accumulate, cudaStream_t s);

// ---- pooling (cuda/kernels/pool.cu), PyTorch semantics incl. ceil mode (math/pool.hpp) --
struct PoolGeometry {
  std::int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
};
void pool_forward(bool max, const float* x, const Dims4& in, float* y, const Dims4& out, const PoolGeometry& g,
                  cudaStream_t s);
void pool_backward(bool max, const float* x, const Dims4& in, const float* dy, const Dims4& out, float* dx, bool accumulate,
                   const PoolGeometry& g, cudaStream_t s);
void global_pool_forward(bool max, const float* x, const Dims4& in, float* y, cudaStream_t s);
void global_pool_backward(bool max, const float* x, const Dims4& in, const float* dy, float* dx, bool accumulate,
                          cudaStream_t s);

// ---- batchnorm (cuda/kernels/batchnorm.cu), math/batchnorm.hpp -----------------------------
// Training: batch statistics; running stats updated as PyTorch (unbiased variance);
// save_mean / save_invstd (c floats each) kept for backward. Eval: running statistics.
void batchnorm_forward(bool train, const float* x, const Dims4& dims, float* y, const float* weight, const float* bias,
                       float* running_mean, float* running_var, float* save_mean, float* save_invstd, float momentum, float eps,
                       cudaStream_t s);
void batchnorm_backward(bool train, const float* x, const float* dy, const Dims4& dims, float* dx, bool accumulate,
                        const float* weight, float* dweight, float* dbias, const float* save_mean, const float* save_invstd,
                        const float* running_mean, const float* running_var, float eps, cudaStream_t s);

// ---- groupnorm (cuda/kernels/groupnorm.cu), math/groupnorm.hpp ---------------------------
// Statistics of each (sample, group) from its own values; no state: backward recomputes them.
void groupnorm_forward(const float* x, const Dims4& dims, std::int64_t groups, const float* weight, const float* bias,
                       float* y, float eps, cudaStream_t s);
void groupnorm_backward(const float* x, const float* dy, const Dims4& dims, std::int64_t groups, const float* weight,
                        float* dx, bool accumulate, float* dweight, float* dbias, float eps, cudaStream_t s);

// ---- mul (cuda/kernels/mul.cu): y = a * b, b of a's dims or one value per channel -------
void mul_forward(const float* a, const float* b, bool per_channel, const Dims4& dims, float* y, cudaStream_t s);
// da = dy * b; db = dy * a, summed over h and w when b is per channel.
void mul_backward(const float* a, const float* b, bool per_channel, const float* dy, const Dims4& dims, float* da,
                  bool accumulate_a, float* db, bool accumulate_b, cudaStream_t s);

// ---- upsample (cuda/kernels/upsample.cu): nearest, by integer factors ---------------------
void upsample_forward(const float* x, const Dims4& in, float* y, const Dims4& out, std::int64_t scale_h,
                      std::int64_t scale_w, cudaStream_t s);
void upsample_backward(const float* dy, const Dims4& out, float* dx, const Dims4& in, bool accumulate,
                       std::int64_t scale_h, std::int64_t scale_w, cudaStream_t s);

// ---- bias (cuda/kernels/bias.cu): per-channel bias of conv and linear outputs ------------
void bias_forward(float* y, const float* bias, const Dims4& dims, cudaStream_t s);
void bias_backward(const float* dy, const Dims4& dims, float* dbias, cudaStream_t s);

// ---- loss (cuda/kernels/loss.cu), math/loss.hpp -------------------------------------------
// Per-sample softmax cross-entropy; adds the summed loss to *loss_sum and the number of
// correct argmaxes to *correct (device accumulators, read a step later) in a fixed order
// (one block, no atomics: the same sum every run); writes
// dlogits * grad_scale when dlogits is not nullptr.
void softmax_cross_entropy(const float* logits, const std::int32_t* labels, std::int64_t n, int classes, float smoothing,
                           float grad_scale, float* dlogits, double* loss_sum, unsigned long long* correct, cudaStream_t s);

// ---- optimizer (cuda/kernels/sgd.cu), math/sgd.hpp --------------------------------------
void sgd_update(float* w, float* momentum, const float* grad, std::int64_t count, const math::SgdHyper& h, cudaStream_t s);

// ---- lookahead and the divergence guard (cuda/kernels/average.cu) ------------------------
// ema <- ema + (1 - decay) * (w - ema) (torch.lerp), then w <- ema.
void lookahead_update(float* w, float* ema, std::int64_t count, float decay, cudaStream_t s);
// Sets *flag to 1 when any of the `count` values is NaN or infinite (leaves it otherwise).
void flag_nonfinite(const float* values, std::int64_t count, unsigned int* flag, cudaStream_t s);

// ---- data (cuda/kernels/augment.cu), math/augment.hpp -----------------------------------
// Writes the normalized, augmented batch into `out` (the input activation): sample i is
// dataset image `indices[i]` of `images` (uint8, CIFAR layout, `plane` bytes each), with
// augment[i] (nullptr: none). mean / inv_std are device arrays of `dims.c` floats.
void stage_batch(const std::uint8_t* images, const std::int64_t* indices, const math::AugmentParams* augment,
                 math::PadMode pad, const float* mean, const float* inv_std, float* out, const Dims4& dims, cudaStream_t s);
// Gathers labels[indices[i]] into out[i] (int32) for the loss.
void gather_labels(const std::uint8_t* labels, const std::int64_t* indices, std::int64_t n, std::int32_t* out, cudaStream_t s);

}  // namespace kiln::cuda
