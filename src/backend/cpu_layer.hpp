#pragma once

// What one layer's CPU forward and backward see: pointers into the plan's memory, in fp32
// (fp16 and bf16 plans store fp32 values rounded to their dtype, see cpu_ops.hpp),
// for the n samples of the current batch, images laid out NCHW or NHWC as `layout` says
// (vectors of features are [n, c] in both). Built once per plan; a step only changes n,
// train, and the dropout key.
#include <cstdint>
#include <span>
#include <vector>

#include "kiln/graph.hpp"
#include "math/layout.hpp"

namespace kiln::detail {

struct CpuLayer {
  const Layer* layer = nullptr;
  std::span<const Layer> layers;        // the whole graph, for input shapes
  std::int64_t n = 0;                   // samples in this batch (at most the plan's batch)
  bool train = false;
  std::vector<const float*> x;          // inputs, in Layer::inputs order
  float* y = nullptr;                   // output
  const float* dy = nullptr;            // backward: gradient of the output
  std::vector<float*> dx;               // backward: input gradients, nullptr where none is needed
  std::vector<bool> accumulate;         // per input: add into dx instead of overwriting it
  std::vector<float*> params;           // the layer's parameters and buffers (Layer::params order)
  std::vector<float*> grads;            // their gradients; nullptr for non-trainable ones
  float* state = nullptr;               // kept from forward to backward (CpuOp::state_floats)
  float* workspace = nullptr;           // scratch for one call (CpuOp::workspace_floats)
  std::int64_t workspace_floats = 0;    // its size: the largest any layer asked for
  std::uint64_t dropout_key = 0;        // dropout: the stream for this layer and step
  int threads = 1;
  Layout layout = Layout::nchw;         // of the images; see dims()
  CpuConv conv = CpuConv::automatic;    // conv: whose kernels (see conv.cpp, choose())
  DType dtype = DType::f32;             // fp16/bf16: values rounded where a GPU stores them (run_forward)
  std::vector<std::int64_t> param_elements;  // of each parameter, in Layer::params order

  const Shape& in_shape(std::size_t i = 0) const { return layers[static_cast<std::size_t>(layer->inputs[i])].shape; }
  const Shape& out_shape() const { return layer->shape; }
  // A shape as this batch lays it out in memory: NHWC only for images of an NHWC plan.
  math::Dims4 dims(const Shape& s) const { return {n, s.c, s.h, s.w, layout == Layout::nhwc && s.is_image()}; }
  math::Dims4 in_dims(std::size_t i = 0) const { return dims(in_shape(i)); }
  math::Dims4 out_dims() const { return dims(out_shape()); }
  bool nhwc() const { return layout == Layout::nhwc; }
};

}  // namespace kiln::detail
