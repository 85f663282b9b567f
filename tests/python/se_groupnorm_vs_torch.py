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
import os
import shutil
import subprocess
import sys

try:
    import numpy as np
    import torch
    import torch.nn as nn
    from safetensors.torch import load_file, save_file
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


def read_cifar(directory):
    records = b"".join(open(os.path.join(directory, f"data_batch_{k}.bin"), "rb").read() for k in range(1, 6))
    raw = np.frombuffer(records, dtype=np.uint8).reshape(-1, 3073)
    labels = torch.from_numpy(raw[:, 0].astype(np.int64))
    images = torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy())
    return images, labels


def main():
    kiln, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)  # this test's own scratch directory
    os.makedirs(work)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = os.path.join(work, "data")
    subprocess.run([kiln, "synth", "--out", data, "--train", str(STEPS * BATCH), "--test", "10", "--seed", "3"],
                   check=True, stdout=subprocess.DEVNULL)

    model = Net()
    # Non-trivial groupnorm affine parameters, so every tensor is tested.
    with torch.no_grad():
        for gn in (model.gn1, model.gn2):
            gn.weight.uniform_(0.5, 1.5)
            gn.bias.uniform_(-0.2, 0.2)
    init = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    save_file(init, os.path.join(work, "init.safetensors"))
    spec = os.path.join(work, "se_groupnorm.yaml")
    with open(spec, "w") as f:
        f.write(SPEC)
    runs = {}
    for layout in LAYOUTS:
        out = os.path.join(work, f"run_{layout}")
        subprocess.run([kiln, "train", spec, "--data", data, "--init", os.path.join(work, "init.safetensors"), "--out",
                        out, "--steps", str(STEPS), "--eval", "none", "--device", "cpu", "--threads", "1", "--layout",
                        layout], check=True, stdout=subprocess.DEVNULL)
        runs[layout] = load_file(os.path.join(out, "model.safetensors"))

    images, labels = read_cifar(data)
    x_all = (images.float() / 255.0 - MEAN) / STD
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    model.train()
    for step in range(STEPS):
        x = x_all[step * BATCH:(step + 1) * BATCH]
        y = labels[step * BATCH:(step + 1) * BATCH]
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    want = model.state_dict()

    failed = False
    for layout, got in runs.items():
        failed |= compare(layout, got, want, init)
    print("MISMATCH" if failed else f"kiln ({', '.join(LAYOUTS)}) matches PyTorch after {STEPS} steps")
    return 1 if failed else 0


def compare(layout, got, want, init):
    """Prints each tensor's largest difference; True where one is out of tolerance."""
    failed = False
    worst = 0.0
    if sorted(got) != sorted(want):
        print(f"{layout}: tensor names differ: kiln {sorted(got)} vs PyTorch {sorted(want)}")
        return True
    for name in want:
        a, b = got[name].to(torch.float64), want[name].to(torch.float64)
        diff = (a - b).abs().max().item()
        scale = b.abs().max().item()
        moved = (want[name].to(torch.float64) - init[name].to(torch.float64)).abs().max().item()
        ok = diff <= 1e-5 + 1e-4 * scale
        print(f"{layout} {name:24s} max |kiln - torch| {diff:.3e}  (max |torch| {scale:.3e}, moved {moved:.3e})"
              f"{'' if ok else '  MISMATCH'}")
        failed |= not ok
        worst = max(worst, diff)
    print(f"{layout}: largest difference {worst:.3e}{'  MISMATCH' if failed else ''}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
