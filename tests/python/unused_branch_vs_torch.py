#!/usr/bin/env python3
"""kiln against PyTorch, step for step, on a model with a side branch nothing consumes.

The model has a residual add, a concat, and a probe (conv + batchnorm + relu) hanging off
relu1 whose output is never used. PyTorch runs the probe's forward (its batchnorm running
statistics move) but gives its parameters no gradient, so SGD leaves them alone even with
weight decay. kiln must do the same, and train the rest exactly as PyTorch does.

PyTorch makes the initial weights (safetensors, kiln's = PyTorch's names); `kiln synth`
makes a small CIFAR-format set; `kiln train --init ... --steps N` trains on it without
shuffling or augmentation; PyTorch trains the same batches with the same recipe. Every
tensor of kiln's model.safetensors must match PyTorch's state_dict.

Usage: unused_branch_vs_torch.py KILN_BIN WORKDIR
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
BATCH = 32
LR = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-3
MEAN, STD = 0.5, 0.25

SPEC = f"""\
name: unused_branch
input: [3, 32, 32]
classes: 10
layers:
  - {{name: conv1, op: conv, out: 8, kernel: 3, pad: 1}}
  - {{name: bn1, op: batchnorm}}
  - {{name: relu1, op: relu}}
  - {{name: probe, op: conv, out: 6, kernel: 3, pad: 1}}
  - {{name: probe_bn, op: batchnorm}}
  - {{name: probe_relu, op: relu}}
  - {{name: conv2, op: conv, out: 8, kernel: 3, pad: 1, from: relu1}}
  - {{name: res, op: add, from: [conv2, relu1]}}
  - {{name: conv3, op: conv, out: 4, kernel: 1, from: res}}
  - {{name: cat, op: concat, from: [conv3, res]}}
  - {{name: pool, op: maxpool, kernel: 4, stride: 4}}
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
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.probe = nn.Conv2d(8, 6, 3, padding=1)
        self.probe_bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(12 * 8 * 8, 10)

    def forward(self, x):
        relu1 = torch.relu(self.bn1(self.conv1(x)))
        torch.relu(self.probe_bn(self.probe(relu1)))  # computed, never used
        res = self.conv2(relu1) + relu1
        cat = torch.cat([self.conv3(res), res], dim=1)
        return self.fc(torch.flatten(nn.functional.max_pool2d(cat, 4, 4), 1))


def main():
    kiln, work = sys.argv[1], sys.argv[2]
    kt.fresh_workdir(work)
    data = kt.synth(kiln, work, STEPS * BATCH)
    model = Net()
    # Non-trivial batchnorm affine parameters and statistics, so every tensor is tested.
    with torch.no_grad():
        for bn in (model.bn1, model.probe_bn):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    init = kt.save_init(model, work)
    got = kt.train_kiln(kiln, work, "unused_branch", SPEC, data, STEPS)
    want = kt.train_torch(model, data, STEPS, BATCH, MEAN, STD, LR, MOMENTUM, WEIGHT_DECAY)

    failed = kt.compare("kiln", got, want, init)
    # The probe's parameters get no gradient: unchanged even with weight decay (its
    # running statistics do move: its forward runs in training mode).
    for name in ("probe.weight", "probe.bias", "probe_bn.weight", "probe_bn.bias"):
        if not torch.equal(got[name], init[name]):
            print(f"{name} changed; an unused layer's parameters must stay as they were")
            failed = True
    if torch.equal(got["probe_bn.running_mean"], init["probe_bn.running_mean"]):
        print("probe_bn.running_mean did not move; the probe's forward must run as in PyTorch")
        failed = True
    print("MISMATCH" if failed else f"kiln matches PyTorch after {STEPS} steps")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
