#!/usr/bin/env python3
"""kiln against PyTorch, step for step, on a model with groupnorm, a squeeze-and-excitation
gate (mul by a per-channel vector) and nearest upsampling.

conv -> GroupNorm -> relu -> SE gate (global pool, linear, relu, linear, sigmoid, mul) ->
Upsample(scale_factor=2, mode='nearest') -> mul by its own C x 1 x 1 global average ->
conv -> GroupNorm (one group per channel) -> maxpool -> linear. PyTorch makes the initial
weights (safetensors, kiln's = PyTorch's names), which `kiln train --init` loads; both train
the same batches with the same recipe, kiln once in NCHW and once in NHWC; every tensor of
kiln's model.safetensors must match PyTorch's state_dict.

Usage: se_groupnorm_vs_torch.py KILN_BIN WORKDIR
Exit codes: 0 match, 1 mismatch, 77 PyTorch or safetensors missing (the test skips).
"""
import sys

try:
    import torch
    import torch.nn as nn

    import kiln_torch as kt  # beside this script: needs numpy and safetensors too
except ImportError as e:  # the ctest registration maps 77 to a skip
    print(f"skipped: {e}")
    sys.exit(77)

STEPS = 5
BATCH = 16
LR = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-3
MEAN, STD = 0.5, 0.25
LAYOUTS = ("nchw", "nhwc")  # kiln trains in both; each must match PyTorch

SPEC = f"""\
name: se_groupnorm
input: [3, 32, 32]
classes: 10
layers:
  - {{name: conv1, op: conv, out: 8, kernel: 3, pad: 1, stride: 2}}
  - {{name: gn1, op: groupnorm, groups: 4}}
  - {{name: relu1, op: relu}}
  - {{name: squeeze, op: global_avgpool}}
  - {{name: flat, op: flatten}}
  - {{name: fc1, op: linear, out: 4}}
  - {{name: fc1_relu, op: relu}}
  - {{name: fc2, op: linear, out: 8}}
  - {{name: gate, op: sigmoid}}
  - {{name: excite, op: mul, from: [relu1, gate]}}
  - {{name: up, op: upsample, scale: 2}}
  - {{name: up_mean, op: global_avgpool}}
  - {{name: self_gate, op: mul, from: [up, up_mean]}}
  - {{name: conv2, op: conv, out: 6, kernel: 3, pad: 1}}
  - {{name: gn2, op: groupnorm, groups: 6, eps: 1e-3}}
  - {{name: pool, op: maxpool, kernel: 8}}
  - {{name: flatten, op: flatten}}
  - {{name: fc, op: linear, out: 10}}
train:
  epochs: 1
  batch: {BATCH}
  lr: {LR}
  momentum: {MOMENTUM}
  weight_decay: {WEIGHT_DECAY}
  shuffle: false
  normalize: {{mean: [{MEAN}, {MEAN}, {MEAN}], std: [{STD}, {STD}, {STD}]}}
"""


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, stride=2)
        self.gn1 = nn.GroupNorm(4, 8)
        self.fc1 = nn.Linear(8, 4)
        self.fc2 = nn.Linear(4, 8)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.gn2 = nn.GroupNorm(6, 6, eps=1e-3)
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        relu1 = torch.relu(self.gn1(self.conv1(x)))
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(torch.flatten(relu1.mean((2, 3), keepdim=True), 1)))))
        up = self.up(relu1 * gate.view(gate.shape[0], -1, 1, 1))
        gated = up * up.mean((2, 3), keepdim=True)
        pooled = nn.functional.max_pool2d(self.gn2(self.conv2(gated)), 8)
        return self.fc(torch.flatten(pooled, 1))


def main():
    kiln, work = sys.argv[1], sys.argv[2]
    kt.fresh_workdir(work)
    data = kt.synth(kiln, work, STEPS * BATCH)
    model = Net()
    # Non-trivial groupnorm affine parameters, so every tensor is tested.
    with torch.no_grad():
        for gn in (model.gn1, model.gn2):
            gn.weight.uniform_(0.5, 1.5)
            gn.bias.uniform_(-0.2, 0.2)
    init = kt.save_init(model, work)
    runs = {layout: kt.train_kiln(kiln, work, f"se_groupnorm_{layout}", SPEC, data, STEPS, ("--layout", layout))
            for layout in LAYOUTS}
    want = kt.train_torch(model, data, STEPS, BATCH, MEAN, STD, LR, MOMENTUM, WEIGHT_DECAY)

    failed = False
    for layout, got in runs.items():
        failed |= kt.compare(layout, got, want, init)
    print("MISMATCH" if failed else f"kiln ({', '.join(LAYOUTS)}) matches PyTorch after {STEPS} steps")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
