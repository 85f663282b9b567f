// The BackendOps Cuda pass: each op's CUDA table entry run as CudaExecutor runs it
// (cuda_op(kind): prepare and bind where it has them, with a ConvPlanCache; forward and
// backward with a LayerRun and a StepContext) against the CPU in NCHW on the same data.
// Skipped without a device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>

#include "backend_ops.hpp"
#include "cuda/conv_plan_cache.hpp"
#include "cuda/device_context.hpp"
#include "cuda/op_table.hpp"
#include "backend/cpu_ops.hpp"
#include "math/half.hpp"
#include "kiln/device.hpp"

namespace kiln::test::ops {
namespace {

// Device values of one dtype (fp32, or bf16/fp16 as their bits), filled from host floats
// (rounded to the dtype: the harness's data already holds values of it) and read back as floats.
class DeviceFloats {
 public:
  DeviceFloats(const std::vector<float>& host, DType dtype)
      : buffer_(std::max<std::size_t>(host.size(), 1) * static_cast<std::size_t>(size_of(dtype))), size_(host.size()), dtype_(dtype) {
    if (!size_) return;
    if (dtype_ == DType::f32) {
      KILN_CUDA_CHECK(cudaMemcpy(get(), host.data(), size_ * 4, cudaMemcpyHostToDevice));
      return;
    }
    std::vector<std::uint16_t> bits(size_);
    for (std::size_t i = 0; i < size_; ++i)
      bits[i] = dtype_ == DType::f16 ? math::float_to_fp16_bits(host[i]) : math::float_to_bf16_bits(host[i]);
    KILN_CUDA_CHECK(cudaMemcpy(get(), bits.data(), size_ * 2, cudaMemcpyHostToDevice));
  }
  void* get() const { return buffer_.data(); }
  float* floats() const { return static_cast<float*>(get()); }  // fp32 buffers (state)
  std::vector<float> download() const {
    KILN_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> host(size_);
    if (!size_) return host;
    if (dtype_ == DType::f32) {
      KILN_CUDA_CHECK(cudaMemcpy(host.data(), get(), size_ * 4, cudaMemcpyDeviceToHost));
      return host;
    }
    std::vector<std::uint16_t> bits(size_);
    KILN_CUDA_CHECK(cudaMemcpy(bits.data(), get(), size_ * 2, cudaMemcpyDeviceToHost));
    for (std::size_t i = 0; i < size_; ++i)
      host[i] = dtype_ == DType::f16 ? math::fp16_bits_to_float(bits[i]) : math::bf16_bits_to_float(bits[i]);
    return host;
  }

 private:
  cuda::DeviceBuffer buffer_;
  std::size_t size_;
  DType dtype_;
};

// A logical batch laid out as `d` in a NaN-filled buffer of `capacity_floats`.
std::vector<float> laid_out(const std::vector<float>& logical, const math::Dims4& d, std::size_t capacity_floats) {
  std::vector<float> v(capacity_floats, kNaN);
  const std::vector<float> laid = to_layout(logical, d);
  std::copy(laid.begin(), laid.end(), v.begin());
  return v;
}

// PyTorch's [K, C, R, S] and the [K, R, S, C] of cuDNN's NHWC engines.
std::vector<float> kcrs_to_krsc(const std::vector<float>& w, const std::vector<std::int64_t>& d, bool back) {
  std::vector<float> out(w.size());
  const std::int64_t K = d[0], C = d[1], R = d[2], S = d[3];
  for (std::int64_t k = 0; k < K; ++k)
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t r = 0; r < R; ++r)
        for (std::int64_t s = 0; s < S; ++s) {
          const auto kcrs = static_cast<std::size_t>(((k * C + c) * R + r) * S + s);
          const auto krsc = static_cast<std::size_t>(((k * R + r) * S + s) * C + c);
          if (back)
            out[kcrs] = w[krsc];
          else
            out[krsc] = w[kcrs];
        }
  return out;
}

// One case through the CUDA entry with `modes`: what the GPU produced, logical NCHW.
Outputs run_cuda(const OpCase& c, const Layer& layer, const Variant& v, const OpData& data, const std::vector<DxMode>& modes,
                 const std::vector<std::vector<float>>& before) {
  const Graph& g = c.graph;
  const cuda::CudaOp& op = cuda::cuda_op(layer.op);
  detail::CudaOptions options;
  options.layout = v.layout;
  options.dtype = v.dtype;
  cuda::DeviceContext device(options);
  cuda::ConvPlanCache convs(device.cudnn(), v.dtype, v.layout, cuda::EnginePolicy{});
  const std::int64_t capacity = std::max(c.n, c.capacity);
  auto dims = [&](const Shape& s) { return math::Dims4{c.n, s.c, s.h, s.w, v.layout == Layout::nhwc && s.is_image()}; };
  auto in_shape = [&](std::size_t k) { return g.layers()[static_cast<std::size_t>(layer.inputs[k])].shape; };
  auto krsc = [&](std::size_t p) {
    const Param& param = g.params()[static_cast<std::size_t>(layer.params[p])];
    return v.layout == Layout::nhwc && op.krsc_weight_in_nhwc && param.role == ParamRole::weight && param.dims.size() == 4;
  };

  std::vector<std::unique_ptr<DeviceFloats>> keep;  // every device buffer of the run
  // Activations and their gradients in the dtype; parameters too where the layer's are
  // (conv, linear), fp32 otherwise (norm layers' parameters, state).
  const DType param_dtype = detail::params_in_dtype(layer) ? v.dtype : DType::f32;
  auto upload = [&](const std::vector<float>& host, DType dtype) {
    keep.push_back(std::make_unique<DeviceFloats>(host, dtype));
    return keep.back().get();
  };
  cuda::LayerRun run;
  run.layer = &layer;
  run.view = op.is_view && op.is_view(g, layer, v.layout);
  std::vector<DeviceFloats*> x, dx, params, grads;
  for (std::size_t k = 0; k < layer.inputs.size(); ++k) {
    const auto floats = count(in_shape(k), capacity);
    x.push_back(upload(laid_out(data.x[k], dims(in_shape(k)), floats), v.dtype));
    const bool acc = modes[k] == DxMode::accumulate;
    dx.push_back(upload(acc ? laid_out(before[k], dims(in_shape(k)), floats) : std::vector<float>(floats, kNaN), v.dtype));
    run.x.push_back(x.back()->get());
    run.dx.push_back(modes[k] == DxMode::null ? nullptr : dx.back()->get());
    run.accumulate.push_back(acc);
  }
  DeviceFloats* y = upload(std::vector<float>(count(layer.shape, capacity), kNaN), v.dtype);
  DeviceFloats* dy = upload(laid_out(data.dy, dims(layer.shape), count(layer.shape, capacity)), v.dtype);
  run.y = y->get();
  run.dy = dy->get();
  if (run.view) {  // the plan gives a view its input's memory, and its gradient the input's
    run.y = run.x[0];
    run.dx[0] = run.dy;
  }
  std::vector<bool> param_grads;
  for (std::size_t p = 0; p < layer.params.size(); ++p) {
    const Param& param = g.params()[static_cast<std::size_t>(layer.params[p])];
    params.push_back(upload(krsc(p) ? kcrs_to_krsc(data.params[p], param.dims, false) : data.params[p], param_dtype));
    grads.push_back(upload(std::vector<float>(data.params[p].size(), kNaN), param_dtype));
    run.params.push_back(params.back()->get());
    run.grads.push_back(param.trainable ? grads.back()->get() : nullptr);
    param_grads.push_back(param.trainable);
  }
  if (const std::int64_t state = op.state_floats(layer); state > 0)
    run.state = upload(std::vector<float>(static_cast<std::size_t>(state), 0.0f), DType::f32)->floats();

  void* scratch = nullptr;
  std::byte* workspace = nullptr;
  cuda::DeviceBuffer workspace_buffer;
  if (op.prepare) {
    cuda::PrepareContext prepare{.graph = &g, .convs = &convs, .n = c.n, .workspace_limit = -1, .candidates = 1,
                                 .output_grad = true, .input_grads = {}, .param_grads = param_grads};
    for (DxMode m : modes) prepare.input_grads.push_back(m != DxMode::null);
    op.prepare(layer, prepare);
    workspace_buffer = cuda::DeviceBuffer(static_cast<std::size_t>(std::max<std::int64_t>(convs.workspace(false), 1)));
    workspace = workspace_buffer.data();
  }
  if (op.dx_via_scratch && !modes.empty() && modes[0] == DxMode::accumulate)
    scratch = upload(std::vector<float>(count(in_shape(0), capacity), kNaN), v.dtype)->get();
  if (op.bind) op.bind(layer, run, {.convs = &convs, .n = c.n, .scratch = scratch, .workspace = workspace});

  cuda::StepContext ctx;
  ctx.graph = &g;
  ctx.layout = v.layout;
  ctx.dtype = v.dtype;
  ctx.n = c.n;
  ctx.train = c.train;
  // dropout_key()'s step, in device memory as the executor's StepValues keeps it.
  const std::uint64_t step = 7;
  cuda::DeviceBuffer step_buffer(sizeof step);
  KILN_CUDA_CHECK(cudaMemcpy(step_buffer.data(), &step, sizeof step, cudaMemcpyHostToDevice));
  ctx.step = reinterpret_cast<const std::uint64_t*>(step_buffer.data());
  ctx.stream = device.stream();
  ctx.cudnn = device.cudnn();
  ctx.cublas = device.cublas();
  ctx.convs = &convs;
  ctx.scratch = scratch;

  Outputs out;
  op.forward(run, ctx);
  KILN_CUDA_CHECK(cudaStreamSynchronize(device.stream()));
  out.y = OpHarness::logical(run.view ? x[0]->download() : y->download(), dims(layer.shape));
  for (std::size_t p = 0; p < params.size(); ++p) {
    const Param& param = g.params()[static_cast<std::size_t>(layer.params[p])];
    out.params.push_back(krsc(p) ? kcrs_to_krsc(params[p]->download(), param.dims, true) : params[p]->download());
  }
  op.backward(run, ctx);
  KILN_CUDA_CHECK(cudaStreamSynchronize(device.stream()));
  for (std::size_t k = 0; k < modes.size(); ++k) {
    if (modes[k] == DxMode::null) {
      out.dx.emplace_back();
      const std::vector<float> untouched = dx[k]->download();
      EXPECT_TRUE(std::all_of(untouched.begin(), untouched.end(), [](float e) { return std::isnan(e); }))
          << "dx" << k << " is null but its buffer was written";
      continue;
    }
    out.dx.push_back(OpHarness::logical(run.view && k == 0 ? dy->download() : dx[k]->download(), dims(in_shape(k))));
  }
  for (std::size_t p = 0; p < grads.size(); ++p) {
    const Param& param = g.params()[static_cast<std::size_t>(layer.params[p])];
    if (!param.trainable) {
      out.grads.emplace_back();
      continue;
    }
    out.grads.push_back(krsc(p) ? kcrs_to_krsc(grads[p]->download(), param.dims, true) : grads[p]->download());
  }
  return out;
}

}  // namespace

void check_cuda(const OpSpec& spec, const Variant& v) {
  if (cuda_device_count() == 0) GTEST_SKIP() << cuda_unavailable_reason();
  int ran = 0;
  for (const OpCase& c : spec.cases()) {
    SCOPED_TRACE("case " + c.name);
    const Layer& layer = *c.graph.find("op");
    if (auto why = cuda::cuda_op(layer.op).supports(layer, v.dtype, v.layout)) {
      std::cout << "[  NOTE    ] case " << c.name << " not run on CUDA: " << *why << "\n";
      continue;
    }
    const OpData d = rounded(random_data(c, c.graph), layer, v.dtype);
    const std::vector<std::vector<float>> before = rounded(random_dx(c, c.graph), v.dtype);
    for (const std::vector<DxMode>& modes : dx_passes(layer.inputs.size())) {
      // A view shares its gradient with its input's: there is nothing to add or to skip.
      if (cuda::cuda_op(layer.op).is_view && cuda::cuda_op(layer.op).is_view(c.graph, layer, v.layout) &&
          modes[0] != DxMode::overwrite)
        continue;
      SCOPED_TRACE(std::string("dx ") + to_string(modes[0]));
      // The CPU emulating the dtype is the reference of the GPU's kernels in it.
      const Outputs want = run_cpu(c, Layout::nchw, 1, d, modes, before, CpuConv::automatic, v.dtype);
      const Outputs got = run_cuda(c, layer, v, d, modes, before);
      expect_outputs(want, got, c, dtype_tolerance(v.dtype, spec.cuda), "cuda vs cpu:");
      if (::testing::Test::HasFatalFailure()) return;
    }
    ++ran;
  }
  if (ran == 0) GTEST_SKIP() << "the CUDA backend refuses every case in " << to_string(v.layout);
}

}  // namespace kiln::test::ops
