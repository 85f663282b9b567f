#pragma once

// Launchers of kiln's own CUDA kernels (one op per file under cuda/kernels/), llm.c style:
// each takes device pointers, sizes and a stream, launches, and checks the launch.
// Activations and their gradients (void*) are stored in the plan's dtype `t` (fp32, bf16 or
// fp16; cuda/kernels/storage.cuh) and laid out as math::Dims4 says; every kernel computes in
// fp32 and rounds once where it stores, as the CPU oracle does (backend/cpu_ops.hpp).
// Parameters, statistics and the optimizer's buffers (float*) are fp32, except where a
// comment says the dtype. The element-wise and index math comes from the KILN_HD functions
// the CPU backend uses and the host tests cover.
//
// Backward launchers follow the CPU contract (src/backend/cpu_layer.hpp): dx may be
// nullptr (not needed), `accumulate` adds into dx instead of overwriting it, parameter
// gradients are overwritten (nullptr: not trainable, skip).
#include <cstddef>
#include <cstdint>
#include <span>
#include <cuda_runtime.h>

#include "kiln/graph.hpp"
#include "kiln/types.hpp"
#include "math/augment.hpp"
#include "math/layout.hpp"
#include "math/sgd.hpp"

namespace kiln::cuda {

using math::Dims4;

// ---- element-wise (cuda/kernels/elementwise.cu) ----------------------------------------
// relu, leaky_relu, gelu, silu, sigmoid, tanh. Backward reads `saved`: the output y for
// relu/sigmoid/tanh, the input x for leaky_relu/gelu/silu (as OpDef::backward_needs).
void activation_forward(DType t, OpKind op, float slope, const void* x, void* y, std::int64_t count, cudaStream_t s);
void activation_backward(DType t, OpKind op, float slope, const void* saved, const void* dy, void* dx, bool accumulate,
                         std::int64_t count, cudaStream_t s);
void scale_forward(DType t, float factor, const void* x, void* y, std::int64_t count, cudaStream_t s);
void scale_backward(DType t, float factor, const void* dy, void* dx, bool accumulate, std::int64_t count, cudaStream_t s);
// Inverted dropout with the counter RNG (math/dropout.hpp): the mask of an element is
// random_uniform(key, j) >= p, j its logical NCHW index (math::logical_index) in either
// layout, identical to the CPU's for the same key.
// The key is a value, or the kernel derives it from the step in device memory (`step`: the
// executor's StepValues), math::stream_key(*step, kStreamDropout, layer), so that a
// captured step replays with each step's own masks.
struct DropoutKey {
  std::uint64_t value = 0;
  const std::uint64_t* step = nullptr;
  std::uint64_t layer = 0;
  DropoutKey(std::uint64_t key) : value(key) {}  // NOLINT: a plain key converts
  DropoutKey(const std::uint64_t* device_step, std::uint64_t layer_index) : step(device_step), layer(layer_index) {}
};
void dropout_forward(DType t, float p, DropoutKey key, const void* x, void* y, const Dims4& d, cudaStream_t s);
void dropout_backward(DType t, float p, DropoutKey key, const void* dy, void* dx, bool accumulate, const Dims4& d,
                      cudaStream_t s);
// dx = dy, or dx += dy.
void copy_or_add(DType t, const void* src, void* dst, bool accumulate, std::int64_t count, cudaStream_t s);
// y = x[0] + x[1] + ... in that order in fp32, stored once (the CPU's add); more than
// kAddInputs inputs are summed kAddInputs at a time, y carrying the partial sum.
constexpr std::size_t kAddInputs = 8;
void add_n(DType t, std::span<void* const> x, void* y, std::int64_t count, cudaStream_t s);
void fill(float* p, float value, std::int64_t count, cudaStream_t s);

// ---- join (cuda/kernels/concat.cu) -------------------------------------------------------
// Copies `part` (channels [offset, offset + part.c) of `whole`) into or out of `whole`.
void concat_forward_part(DType t, const void* part, const Dims4& part_dims, void* whole, const Dims4& whole_dims,
                         std::int64_t channel_offset, cudaStream_t s);
void concat_backward_part(DType t, const void* dwhole, const Dims4& whole_dims, void* dpart, const Dims4& part_dims,
                          std::int64_t channel_offset, bool accumulate, cudaStream_t s);
// Flatten of an NHWC tensor into PyTorch's channel-major feature order, and back.
void nhwc_to_nchw(DType t, const void* x, const Dims4& dims, void* y, cudaStream_t s);
void nchw_to_nhwc_grad(DType t, const void* dy, const Dims4& dims, void* dx, bool accumulate, cudaStream_t s);

// ---- pooling (cuda/kernels/pool.cu), PyTorch semantics incl. ceil mode (math/pool.hpp) --
struct PoolGeometry {
  std::int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
};
void pool_forward(DType t, bool max, const void* x, const Dims4& in, void* y, const Dims4& out, const PoolGeometry& g,
                  cudaStream_t s);
void pool_backward(DType t, bool max, const void* x, const Dims4& in, const void* dy, const Dims4& out, void* dx, bool accumulate,
                   const PoolGeometry& g, cudaStream_t s);
void global_pool_forward(DType t, bool max, const void* x, const Dims4& in, void* y, cudaStream_t s);
void global_pool_backward(DType t, bool max, const void* x, const Dims4& in, const void* dy, void* dx, bool accumulate,
                          cudaStream_t s);

// ---- batchnorm (cuda/kernels/batchnorm.cu), math/batchnorm.hpp -----------------------------
// Training: batch statistics; running stats updated as PyTorch (unbiased variance);
// save_mean / save_invstd (c floats each) kept for backward. Eval: running statistics.
void batchnorm_forward(DType t, bool train, const void* x, const Dims4& dims, void* y, const float* weight, const float* bias,
                       float* running_mean, float* running_var, float* save_mean, float* save_invstd, float momentum, float eps,
                       cudaStream_t s);
void batchnorm_backward(DType t, bool train, const void* x, const void* dy, const Dims4& dims, void* dx, bool accumulate,
                        const float* weight, float* dweight, float* dbias, const float* save_mean, const float* save_invstd,
                        const float* running_mean, const float* running_var, float eps, cudaStream_t s);
// batchnorm followed by an activation (relu, leaky_relu, gelu, silu, sigmoid, tanh) as one
// kernel each way: bitwise the result of batchnorm_forward then activation_forward (the
// normalized value is rounded to the dtype before the activation, as the unfused pair stores
// it), and of activation_backward then batchnorm_backward (the activation's gradient rounded
// to the dtype before the batchnorm's sums read it). y is the activation's output, dy its
// gradient. The normalized value is not stored: backward recomputes it from x and the
// per-channel affine forward applied. In training that affine comes from the batch statistics
// in double, which save_mean / save_invstd hold only rounded to float, so forward also saves
// it: save_alpha_beta holds 2*c floats, the scale [0, c) then the shift [c, 2c) (written when
// not nullptr, in either mode; backward reads it in training). Evaluation recomputes the
// affine from the running statistics, weight and bias, as forward did. With y nullptr forward
// computes and saves the statistics and the affine only (a cuDNN convolution's prologue
// applies them: cuda/fused_convs.hpp).
void batchnorm_act_forward(DType t, bool train, OpKind act, float slope, const void* x, const Dims4& dims, void* y,
                           const float* weight, const float* bias, float* running_mean, float* running_var,
                           float* save_mean, float* save_invstd, float* save_alpha_beta, float momentum, float eps,
                           cudaStream_t s);
void batchnorm_act_backward(DType t, bool train, OpKind act, float slope, const void* x, const void* dy, const Dims4& dims,
                            void* dx, bool accumulate, const float* weight, const float* bias, float* dweight, float* dbias,
                            const float* save_mean, const float* save_invstd, const float* save_alpha_beta,
                            const float* running_mean, const float* running_var, float eps, cudaStream_t s);

// ---- groupnorm (cuda/kernels/groupnorm.cu), math/groupnorm.hpp ---------------------------
// Statistics of each (sample, group) from its own values; no state: backward recomputes them.
void groupnorm_forward(DType t, const void* x, const Dims4& dims, std::int64_t groups, const float* weight,
                       const float* bias, void* y, float eps, cudaStream_t s);
void groupnorm_backward(DType t, const void* x, const void* dy, const Dims4& dims, std::int64_t groups, const float* weight,
                        void* dx, bool accumulate, float* dweight, float* dbias, float eps, cudaStream_t s);

// ---- mul (cuda/kernels/mul.cu): y = a * b, b of a's dims or one value per channel -------
void mul_forward(DType t, const void* a, const void* b, bool per_channel, const Dims4& dims, void* y, cudaStream_t s);
// da = dy * b; db = dy * a, summed over h and w when b is per channel.
void mul_backward(DType t, const void* a, const void* b, bool per_channel, const void* dy, const Dims4& dims, void* da,
                  bool accumulate_a, void* db, bool accumulate_b, cudaStream_t s);

// ---- upsample (cuda/kernels/upsample.cu): nearest, by integer factors ---------------------
void upsample_forward(DType t, const void* x, const Dims4& in, void* y, const Dims4& out, std::int64_t scale_h,
                      std::int64_t scale_w, cudaStream_t s);
void upsample_backward(DType t, const void* dy, const Dims4& out, void* dx, const Dims4& in, bool accumulate,
                       std::int64_t scale_h, std::int64_t scale_w, cudaStream_t s);

// ---- bias (cuda/kernels/bias.cu): per-channel bias of conv and linear outputs ------------
// The bias and its gradient are in the dtype too: a conv's and a linear's parameters are
// read as the dtype's copies of the fp32 masters (see cast_params below).
void bias_forward(DType t, void* y, const void* bias, const Dims4& dims, cudaStream_t s);
void bias_backward(DType t, const void* dy, const Dims4& dims, void* dbias, cudaStream_t s);

// ---- loss (cuda/kernels/loss.cu), math/loss.hpp -------------------------------------------
// Per-sample softmax cross-entropy; adds the summed loss to *loss_sum and the number of
// correct argmaxes to *correct (device accumulators, read a step later) in a fixed order
// (one block, no atomics: the same sum every run); writes
// dlogits * grad_scale (times *loss_scale where that is not nullptr: fp16's dynamic scale,
// below) when dlogits is not nullptr.
void softmax_cross_entropy(DType t, const void* logits, const std::int32_t* labels, std::int64_t n, int classes,
                           float smoothing, float grad_scale, const float* loss_scale, void* dlogits, double* loss_sum,
                           unsigned long long* correct, cudaStream_t s);

// ---- optimizer (cuda/kernels/sgd.cu), math/sgd.hpp --------------------------------------
// With `scaler` (fp16's loss scale, below): nothing when the step is skipped, otherwise the
// gradient times 1 / scale (a power of two: exact) — the CPU's update. With `device_h` the
// hyperparameters are read from device memory (the executor's StepValues, written each
// step, so that a captured step replays with each step's learning rate) and `h` is unused.
struct LossScaler;
void sgd_update(float* w, float* momentum, const float* grad, std::int64_t count, const math::SgdHyper& h,
                const LossScaler* scaler, cudaStream_t s, const math::SgdHyper* device_h = nullptr);

// ---- mixed precision (cuda/kernels/cast.cu) ----------------------------------------------
// dst[i] = src[i] rounded to t (the dtype copies of the fp32 master weights), and back
// (the dtype gradients of those weights, widened for the optimizer).
void cast_from_f32(DType t, const float* src, void* dst, std::int64_t count, cudaStream_t s);
void cast_to_f32(DType t, const void* src, float* dst, std::int64_t count, cudaStream_t s);

// fp16's dynamic loss scale on the device (PyTorch's GradScaler; the CPU's in
// backend/executor.hpp's LossScale), so that a step never waits for the host to decide.
// The rule is math/loss_scale.hpp's, the CPU's.
struct LossScaler {
  float scale;
  unsigned int skip;         // this step's update is skipped (its gradients overflowed)
  std::int64_t good_steps;   // since the scale last changed
};
// After backward: skip = math::loss_scale_skips(*nonfinite, scale), and the scale this step
// used is copied to *used (the step's statistics).
void loss_scale_check(LossScaler* scaler, const unsigned int* nonfinite, float* used, cudaStream_t s);
// After the update: math::loss_scale_advance (a skipped step halves the scale, growth_interval
// good steps in a row double it).
void loss_scale_advance(LossScaler* scaler, std::int64_t growth_interval, cudaStream_t s);

// ---- lookahead and the divergence guard (cuda/kernels/average.cu) ------------------------
// ema <- ema + (1 - decay) * (w - ema) (torch.lerp), then w <- ema.
void lookahead_update(float* w, float* ema, std::int64_t count, float decay, cudaStream_t s);
// Sets *flag to 1 when any of the `count` values is NaN or infinite (leaves it otherwise).
void flag_nonfinite(const float* values, std::int64_t count, unsigned int* flag, cudaStream_t s);

// ---- data (cuda/kernels/augment.cu), math/augment.hpp -----------------------------------
// Writes the normalized, augmented batch into `out` (the input activation): sample i is
// dataset image `indices[i]` of `images` (uint8, CIFAR layout, `plane` bytes each), with
// augment[i] (nullptr: none). mean / inv_std are device arrays of `dims.c` floats.
void stage_batch(DType t, const std::uint8_t* images, const std::int64_t* indices, const math::AugmentParams* augment,
                 math::PadMode pad, const float* mean, const float* inv_std, void* out, const Dims4& dims, cudaStream_t s);
// Gathers labels[indices[i]] into out[i] (int32) for the loss.
void gather_labels(const std::uint8_t* labels, const std::int64_t* indices, std::int64_t n, std::int32_t* out, cudaStream_t s);

}  // namespace kiln::cuda
