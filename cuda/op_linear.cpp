// linear on CUDA: cuBLAS SGEMM for y = x W^T and its gradients, the bias by kiln's kernel
// (cuda/kernels/bias.cu).
#include "cuda/check.hpp"
#include "cuda/kernels.hpp"
#include "cuda/op_table.hpp"

namespace kiln::cuda {

namespace {

Status compile(const Graph&, const Layer& layer, const Target& target, OpCompiled& out, std::string& failed) {
  return compile_output_only("cuBLAS GEMM; tensor descriptors", layer, target, out, failed);
}

void forward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  // Row-major y[n, out] = x[n, in] W^T is column-major y^T = W^T' x^T with W's buffer read as
  // the column-major [in, out] matrix it is.
  const int n = static_cast<int>(ctx.n), outf = static_cast<int>(layer.shape.c),
            inf = static_cast<int>(ctx.input(layer, 0).c);
  const float one = 1.0f, zero = 0.0f;
  KILN_CUBLAS_CHECK(cublasSgemm(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, outf, n, inf, &one, run.params[0], inf, run.x[0], inf,
                                &zero, run.y, outf));
  if (layer.attrs.bias) bias_forward(run.y, run.params[1], ctx.dims(layer.shape), ctx.stream);
}

void backward(LayerRun& run, const StepContext& ctx) {
  const Layer& layer = *run.layer;
  const int n = static_cast<int>(ctx.n), outf = static_cast<int>(layer.shape.c),
            inf = static_cast<int>(ctx.input(layer, 0).c);
  const float one = 1.0f, zero = 0.0f, beta = first_accumulates(run) ? 1.0f : 0.0f;
  // dx[n, in] = dy[n, out] W[out, in]; dW[out, in] = dy^T x; column-major as above.
  if (float* dx = first_dx(run))
    KILN_CUBLAS_CHECK(
        cublasSgemm(ctx.cublas, CUBLAS_OP_N, CUBLAS_OP_N, inf, n, outf, &one, run.params[0], inf, run.dy, outf, &beta, dx, inf));
  if (run.grads[0])
    KILN_CUBLAS_CHECK(cublasSgemm(ctx.cublas, CUBLAS_OP_N, CUBLAS_OP_T, inf, outf, n, &one, run.x[0], inf, run.dy, outf, &zero,
                                  run.grads[0], inf));
  if (layer.attrs.bias && run.grads[1]) bias_backward(run.dy, ctx.dims(layer.shape), run.grads[1], ctx.stream);
}

}  // namespace

const CudaOp kLinearOp{.kind = OpKind::linear,
                       .supports = supported_everywhere,
                       .compile = compile,
                       .state_floats = no_state,
                       .forward = forward,
                       .backward = backward};

}  // namespace kiln::cuda
