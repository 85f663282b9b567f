#pragma once

// The fixed model the checkpoint harnesses match files against: every kind of tensor a kiln
// checkpoint holds (conv and linear weights and biases, batchnorm's four tensors and its
// step counter), in a few hundred values. tests/fuzz/tiny.yaml is the same text, for making
// seed files with `kiln train`.
#include <string_view>

namespace kiln::fuzz {

inline constexpr std::string_view kTinyModel = R"(name: fuzz_tiny
input: [3, 32, 32]
classes: 10
layers:
  - {name: conv1, op: conv, out: 2, kernel: 4, stride: 8}
  - {name: bn1, op: batchnorm}
  - {op: relu}
  - {op: flatten}
  - {name: fc, op: linear, out: 10}
train: {batch: 2, epochs: 1, lr: 0.01, momentum: 0.9, augment: false}
)";

}  // namespace kiln::fuzz
