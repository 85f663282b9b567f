"""What the kiln-against-PyTorch scripts (tests/python/*_vs_torch.py) share: a synthetic
dataset made by `kiln synth`, kiln trained from PyTorch's initial weights (`kiln train
--init`), the same steps in PyTorch on the same batches, and a tensor-by-tensor comparison.
Importing it needs torch, numpy and safetensors; the scripts turn an ImportError into exit 77.
"""
import os
import shutil
import subprocess

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file


def fresh_workdir(work):
    """Empties `work` (the test's own scratch directory) and fixes PyTorch's seed and threads."""
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    torch.manual_seed(0)
    torch.set_num_threads(1)


def synth(kiln, work, train):
    """A synthetic CIFAR-10-format dataset of `train` images (seed 3) under work/data."""
    data = os.path.join(work, "data")
    subprocess.run([kiln, "synth", "--out", data, "--train", str(train), "--test", "10", "--seed", "3"], check=True,
                   stdout=subprocess.DEVNULL)
    return data


def read_cifar(directory):
    records = b"".join(open(os.path.join(directory, f"data_batch_{k}.bin"), "rb").read() for k in range(1, 6))
    raw = np.frombuffer(records, dtype=np.uint8).reshape(-1, 3073)
    labels = torch.from_numpy(raw[:, 0].astype(np.int64))
    images = torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy())
    return images, labels


def save_init(model, work):
    """The model's initial state_dict as work/init.safetensors (returned, cloned)."""
    init = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    save_file(init, os.path.join(work, "init.safetensors"))
    return init


def train_kiln(kiln, work, name, spec_text, data, steps, extra=()):
    """Writes the spec, trains `steps` steps from work/init.safetensors into work/run_<name>
    on the CPU, one thread, no evaluation; returns kiln's model.safetensors."""
    spec = os.path.join(work, f"{name}.yaml")
    with open(spec, "w") as f:
        f.write(spec_text)
    out = os.path.join(work, f"run_{name}")
    subprocess.run([kiln, "train", spec, "--data", data, "--init", os.path.join(work, "init.safetensors"), "--out", out,
                    "--steps", str(steps), "--eval", "none", "--device", "cpu", "--threads", "1", *extra], check=True,
                   stdout=subprocess.DEVNULL)
    return load_file(os.path.join(out, "model.safetensors"))


def train_torch(model, data, steps, batch, mean, std, lr, momentum, weight_decay):
    """The same steps in PyTorch: file order, no augmentation, torch.optim.SGD; its state_dict."""
    images, labels = read_cifar(data)
    x_all = (images.float() / 255.0 - mean) / std
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    model.train()
    for step in range(steps):
        x = x_all[step * batch:(step + 1) * batch]
        y = labels[step * batch:(step + 1) * batch]
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.state_dict()


def compare(label, got, want, init):
    """Prints each tensor's largest difference; True where a name or a tensor is out of
    tolerance (|kiln - torch| <= 1e-5 + 1e-4 * max |torch|)."""
    if sorted(got) != sorted(want):
        print(f"{label}: tensor names differ: kiln {sorted(got)} vs PyTorch {sorted(want)}")
        return True
    failed = False
    worst = 0.0
    for name in want:
        a, b = got[name].to(torch.float64), want[name].to(torch.float64)
        diff = (a - b).abs().max().item()
        scale = b.abs().max().item()
        moved = (b - init[name].to(torch.float64)).abs().max().item()
        ok = diff <= 1e-5 + 1e-4 * scale
        print(f"{label} {name:24s} max |kiln - torch| {diff:.3e}  (max |torch| {scale:.3e}, moved {moved:.3e})"
              f"{'' if ok else '  MISMATCH'}")
        failed |= not ok
        worst = max(worst, diff)
    print(f"{label}: largest difference {worst:.3e}{'  MISMATCH' if failed else ''}")
    return failed
