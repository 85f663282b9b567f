#pragma once

// Small models several tests train or plan, built with the C++ builder.
#include "kiln/kiln.hpp"

namespace kiln::test {

// Everything that a resumed run must reproduce: shuffling, augmentation, dropout,
// batchnorm statistics, momentum, a schedule.
inline Graph dropout_bn_net() {
  GraphBuilder b("small", Shape::chw(3, 32, 32), 10);
  b.add(layers::conv(8, 3).pad(1).stride(2).named("conv1"))
      .add(layers::batchnorm().named("bn1"))
      .add(layers::relu())
      .add(layers::dropout(0.2).named("drop"))
      .add(layers::maxpool(2))
      .add(layers::flatten())
      .add(layers::linear(10).named("fc"));
  return b.build();
}

// A residual add, a concat, and (with_probe) a probe branch nothing consumes — conv,
// batchnorm, relu off relu1: the model of the unused-branch bug. Input 3 x size x size.
inline Graph probe_model(bool with_probe, std::int64_t size = 32) {
  GraphBuilder b("probe", Shape::chw(3, size, size), 10);
  b.add(layers::conv(8, 3).pad(1).named("conv1")).add(layers::batchnorm().named("bn1")).add(layers::relu().named("relu1"));
  if (with_probe)
    b.add(layers::conv(6, 3).pad(1).named("probe"))
        .add(layers::batchnorm().named("probe_bn"))
        .add(layers::relu().named("probe_relu"));
  b.add(layers::conv(8, 3).pad(1).from({"relu1"}).named("conv2"))
      .add(layers::add({"conv2", "relu1"}).named("res"))
      .add(layers::conv(4, 1).from({"res"}).named("conv3"))
      .add(layers::concat({"conv3", "res"}).named("cat"))
      .add(layers::maxpool(4).named("pool"))
      .add(layers::flatten().named("flatten"))
      .add(layers::linear(10).named("fc"));
  return b.build();
}

}  // namespace kiln::test
