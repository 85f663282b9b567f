// The CUDA executor's forward and backward: each layer's work issued on the stream, in the
// order and with the memory the plan gives. Shapes were validated when the graph was built.
#include <fmt/format.h>

#include "cuda/cuda_executor.hpp"
#include "cuda/kernels.hpp"
#include "graph/op_def.hpp"
#include "math/rng.hpp"
#include "trace/trace.hpp"

namespace kiln::cuda {

namespace {

PoolGeometry pool_geometry(const Attrs& a) {
  return {a.kernel.h, a.kernel.w, a.stride->h, a.stride->w, a.pad.top, a.pad.left};
}

std::uint64_t dropout_key(std::uint64_t step, const Layer& layer) {
  return math::stream_key(step, math::kStreamDropout, static_cast<std::uint64_t>(layer.index));
}

}  // namespace

void CudaExecutor::forward(bool train, std::uint64_t step) {
  last_train_ = train;
  for (LayerRun& run : runs_) {
    if (run.layer->index == 0) continue;
    trace::Range range(run.fwd_name.c_str());
    LayerScope scope(run.fwd_name);
    auto& ev = layer_events_[static_cast<std::size_t>(run.layer->index)];
    if (profiling_) KILN_CUDA_CHECK(cudaEventRecord(ev.first.get(), stream_.get()));
    forward_layer(run, train, step);
    if (profiling_) KILN_CUDA_CHECK(cudaEventRecord(ev.second.get(), stream_.get()));
    if (profiling_) {
      KILN_CUDA_CHECK(cudaEventSynchronize(ev.second.get()));
      float ms = 0;
      KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, ev.first.get(), ev.second.get()));
      auto& t = times_[static_cast<std::size_t>(run.layer->index)];
      t.forward_ms += ms;
      ++t.calls;
    }
  }
}

void CudaExecutor::backward(std::uint64_t step) {
  for (auto it = runs_.rbegin(); it != runs_.rend(); ++it) {
    LayerRun& run = *it;
    if (run.layer->index == 0 || !run.dy) continue;
    trace::Range range(run.bwd_name.c_str());
    LayerScope scope(run.bwd_name);
    auto& ev = layer_events_[static_cast<std::size_t>(run.layer->index)];
    if (profiling_) KILN_CUDA_CHECK(cudaEventRecord(ev.first.get(), stream_.get()));
    backward_layer(run, step);
    if (profiling_) {
      KILN_CUDA_CHECK(cudaEventRecord(ev.second.get(), stream_.get()));
      KILN_CUDA_CHECK(cudaEventSynchronize(ev.second.get()));
      float ms = 0;
      KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, ev.first.get(), ev.second.get()));
      times_[static_cast<std::size_t>(run.layer->index)].backward_ms += ms;
    }
  }
  // The divergence guard's check of this step's gradients travels with its loss.
  if (copy_after_backward_) {
    flag_nonfinite(grads_, param_floats_, reinterpret_cast<unsigned int*>(loss_sum_ + 2), stream_.get());
    ship_stats();
    copy_after_backward_ = false;
  }
}

void CudaExecutor::forward_layer(LayerRun& run, bool train, std::uint64_t step) {
  const Layer& layer = *run.layer;
  const Attrs& a = layer.attrs;
  cudaStream_t s = stream_.get();
  const math::Dims4 out = dims(layer.shape, n_);
  const auto in = [&](std::size_t i) { return dims(graph_.layers()[static_cast<std::size_t>(layer.inputs[i])].shape, n_); };
  const std::int64_t count = out.count();
  switch (layer.op) {
    case OpKind::input: return;
    case OpKind::conv: {
      conv_plans(run, n_).fwd->execute(cudnn_);
      if (a.bias) bias_forward(run.y, run.params[1], out, s);
      return;
    }
    case OpKind::maxpool:
    case OpKind::avgpool:
      pool_forward(layer.op == OpKind::maxpool, run.x[0], in(0), run.y, out, pool_geometry(a), s);
      return;
    case OpKind::global_avgpool:
    case OpKind::global_maxpool: global_pool_forward(layer.op == OpKind::global_maxpool, run.x[0], in(0), run.y, s); return;
    case OpKind::batchnorm:
      batchnorm_forward(train, run.x[0], out, run.y, run.params[0], run.params[1], run.params[2], run.params[3], run.save_mean,
                        run.save_invstd, static_cast<float>(a.momentum), static_cast<float>(a.eps), s);
      return;
    case OpKind::relu:
    case OpKind::leaky_relu:
    case OpKind::gelu:
    case OpKind::silu:
    case OpKind::sigmoid:
    case OpKind::tanh: activation_forward(layer.op, static_cast<float>(a.slope), run.x[0], run.y, count, s); return;
    case OpKind::dropout:
      if (train && a.p > 0) dropout_forward(static_cast<float>(a.p), dropout_key(step, layer), run.x[0], run.y, count, s);
      else if (run.y != run.x[0]) copy_or_add(run.x[0], run.y, false, count, s);
      return;
    case OpKind::flatten:
      if (!run.view) nhwc_to_nchw(run.x[0], in(0), run.y, s);
      return;
    case OpKind::scale: scale_forward(static_cast<float>(a.factor), run.x[0], run.y, count, s); return;
    case OpKind::linear: {
      // Row-major y[n, out] = x[n, in] W^T is column-major y^T = W^T' x^T with W's buffer
      // read as the column-major [in, out] matrix it is.
      const int n = static_cast<int>(n_), outf = static_cast<int>(layer.shape.c), inf = static_cast<int>(in(0).c);
      const float one = 1.0f, zero = 0.0f;
      KILN_CUBLAS_CHECK(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, outf, n, inf, &one, run.params[0], inf, run.x[0], inf,
                                    &zero, run.y, outf));
      if (a.bias) bias_forward(run.y, run.params[1], out, s);
      return;
    }
    case OpKind::add:
      add2(run.x[0], run.x[1], run.y, count, s);
      for (std::size_t i = 2; i < run.x.size(); ++i) add2(run.y, run.x[i], run.y, count, s);
      return;
    case OpKind::concat: {
      std::int64_t offset = 0;
      for (std::size_t i = 0; i < run.x.size(); ++i) {
        concat_forward_part(run.x[i], in(i), run.y, out, offset, s);
        offset += in(i).c;
      }
      return;
    }
  }
}

void CudaExecutor::backward_layer(LayerRun& run, std::uint64_t step) {
  const Layer& layer = *run.layer;
  const Attrs& a = layer.attrs;
  cudaStream_t s = stream_.get();
  const math::Dims4 out = dims(layer.shape, n_);
  const auto in = [&](std::size_t i) { return dims(graph_.layers()[static_cast<std::size_t>(layer.inputs[i])].shape, n_); };
  const std::int64_t count = out.count();
  float* dx = run.dx.empty() ? nullptr : run.dx[0];
  const bool acc = !run.accumulate.empty() && run.accumulate[0];
  switch (layer.op) {
    case OpKind::input: return;
    case OpKind::conv: {
      ConvPlans& p = conv_plans(run, n_);
      if (p.bwd_data && dx) {
        p.bwd_data->execute(cudnn_);
        if (acc) copy_or_add(scratch_, dx, true, in(0).count(), s);
      }
      if (p.bwd_filter && run.grads[0]) p.bwd_filter->execute(cudnn_);
      if (a.bias && run.grads[1]) bias_backward(run.dy, out, run.grads[1], s);
      return;
    }
    case OpKind::maxpool:
    case OpKind::avgpool:
      if (dx) pool_backward(layer.op == OpKind::maxpool, run.x[0], in(0), run.dy, out, dx, acc, pool_geometry(a), s);
      return;
    case OpKind::global_avgpool:
    case OpKind::global_maxpool:
      if (dx) global_pool_backward(layer.op == OpKind::global_maxpool, run.x[0], in(0), run.dy, dx, acc, s);
      return;
    case OpKind::batchnorm:
      batchnorm_backward(last_train_, run.x[0], run.dy, out, dx, acc, run.params[0], run.grads[0], run.grads[1], run.save_mean,
                         run.save_invstd, run.params[2], run.params[3], static_cast<float>(a.eps), s);
      return;
    case OpKind::relu:
    case OpKind::leaky_relu:
    case OpKind::gelu:
    case OpKind::silu:
    case OpKind::sigmoid:
    case OpKind::tanh: {
      if (!dx) return;
      const float* saved = detail::op_def(layer.op).backward_needs(layer).output ? run.y : run.x[0];
      activation_backward(layer.op, static_cast<float>(a.slope), saved, run.dy, dx, acc, count, s);
      return;
    }
    case OpKind::dropout:
      if (!dx) return;
      if (last_train_ && a.p > 0) dropout_backward(static_cast<float>(a.p), dropout_key(step, layer), run.dy, dx, acc, count, s);
      else copy_or_add(run.dy, dx, acc, count, s);
      return;
    case OpKind::flatten:
      if (!run.view && dx) nchw_to_nhwc_grad(run.dy, in(0), dx, acc, s);
      return;
    case OpKind::scale:
      if (dx) scale_backward(static_cast<float>(a.factor), run.dy, dx, acc, count, s);
      return;
    case OpKind::linear: {
      const int n = static_cast<int>(n_), outf = static_cast<int>(layer.shape.c), inf = static_cast<int>(in(0).c);
      const float one = 1.0f, zero = 0.0f, beta = acc ? 1.0f : 0.0f;
      // dx[n, in] = dy[n, out] W[out, in]; dW[out, in] = dy^T x; column-major as above.
      if (dx)
        KILN_CUBLAS_CHECK(
            cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, inf, n, outf, &one, run.params[0], inf, run.dy, outf, &beta, dx, inf));
      if (run.grads[0])
        KILN_CUBLAS_CHECK(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_T, inf, outf, n, &one, run.x[0], inf, run.dy, outf, &zero,
                                      run.grads[0], inf));
      if (a.bias && run.grads[1]) bias_backward(run.dy, out, run.grads[1], s);
      return;
    }
    case OpKind::add:
      for (std::size_t i = 0; i < run.dx.size(); ++i)
        if (run.dx[i]) copy_or_add(run.dy, run.dx[i], run.accumulate[i], count, s);
      return;
    case OpKind::concat: {
      std::int64_t offset = 0;
      for (std::size_t i = 0; i < run.dx.size(); ++i) {
        if (run.dx[i]) concat_backward_part(run.dy, out, run.dx[i], in(i), offset, run.accumulate[i], s);
        offset += in(i).c;
      }
      return;
    }
  }
}

}  // namespace kiln::cuda
