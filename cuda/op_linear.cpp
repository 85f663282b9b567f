// linear on CUDA: cuBLAS GEMMs for y = x W^T and its gradients (SGEMM's fp32 in an fp32 plan;
// bf16/fp16 operands with fp32 accumulation in a half-width one), the bias by kiln's kernel
// (cuda/kernels/bias.cu).
#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"

namespace kiln::cuda {

namespace {

cudaDataType_t blas_type(DType dtype) {
  switch (dtype) {
    case DType::f16: return CUDA_R_16F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f32: break;
  }
  return CUDA_R_32F;
}

// C = alpha op(A) op(B) + beta C, column-major, every operand in the plan's dtype, fp32
// accumulation: cublasSgemm's arithmetic for fp32 (under the handle's math mode, TF32 only
// when the user asked), the tensor cores' for bf16/fp16.
void gemm(const StepContext& ctx, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
          const void* a, int lda, const void* b, int ldb, float beta, void* c, int ldc) {
  if (ctx.dtype == DType::f32) {
    KILN_CUBLAS_CHECK(cublasSgemm(ctx.cublas, ta, tb, m, n, k, &alpha, static_cast<const float*>(a), lda,
                                  static_cast<const float*>(b), ldb, &beta, static_cast<float*>(c), ldc));
    return;
  }
  const cudaDataType_t t = blas_type(ctx.dtype);
  KILN_CUBLAS_CHECK(cublasGemmEx(ctx.cublas, ta, tb, m, n, k, &alpha, a, t, lda, b, t, ldb, &beta, c, t, ldc,
                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

Status compile(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only("cuBLAS GEMM; tensor descriptors", layer, target, out, failed);
}

void forward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  // Row-major y[n, out] = x[n, in] W^T is column-major y^T = W^T' x^T with W's buffer read as
  // the column-major [in, out] matrix it is.
  const int n = static_cast<int>(ctx.n), outf = static_cast<int>(layer.shape.c),
            inf = static_cast<int>(ctx.input(layer, 0).c);
  gemm(ctx, CUBLAS_OP_T, CUBLAS_OP_N, outf, n, inf, 1.0f, run.params[0], inf, run.x[0], inf, 0.0f, run.y, outf);
  if (layer.attrs.bias) bias_forward(ctx.dtype, run.y, run.params[1], ctx.dims(layer.shape), ctx.stream);
}

void backward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  const int n = static_cast<int>(ctx.n), outf = static_cast<int>(layer.shape.c),
            inf = static_cast<int>(ctx.input(layer, 0).c);
  const float beta = first_accumulates(run) ? 1.0f : 0.0f;
  // dx[n, in] = dy[n, out] W[out, in]; dW[out, in] = dy^T x; column-major as above. Adding
  // into dx (beta 1) reads the stored dx and rounds the sum once, as the CPU oracle does.
  if (void* dx = first_dx(run)) gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, inf, n, outf, 1.0f, run.params[0], inf, run.dy, outf, beta, dx, inf);
  if (run.grads[0])
    gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_T, inf, outf, n, 1.0f, run.x[0], inf, run.dy, outf, 0.0f, run.grads[0], inf);
  if (layer.attrs.bias && run.grads[1]) bias_backward(ctx.dtype, run.dy, ctx.dims(layer.shape), run.grads[1], ctx.stream);
}

}  // namespace

const CudaOp kLinearOp{.kind = OpKind::linear,
                       .supports = supported_everywhere,
                       .compile = compile,
                       .state_floats = no_state,
                       .forward = forward,
                       .backward = backward};

}  // namespace kiln::cuda
