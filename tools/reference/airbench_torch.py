#!/usr/bin/env python3
"""A PyTorch reference for kiln's airbench recipe (data/models/airbench.yaml), written from
the recipe's description: the same network (parameter names as kiln's, so weights move
between the two through safetensors), the same training (Nesterov SGD, lr-independent
decay with batchnorm biases at 64x, linear warmup/decay, label smoothing 0.2 with a summed
loss, whitening init from 5,000 images, dirac init, lookahead every 5 steps, translate-2 +
alternating flip, 6-view test-time augmentation), reading the same CIFAR-10 binary files.
It runs on the CPU here (Debian's python3-torch) and on a GPU machine.

  /usr/bin/python3 tools/reference/airbench_torch.py --data DIR [--epochs 9.9] [--seed 0]
      [--train-subset N] [--threads 2] [--steps N] [--no-augment] [--no-shuffle] [--no-tta]
      [--init FILE.safetensors] [--save-init FILE.safetensors] [--print-losses N] [--json]
      [--device cpu|cuda]

--save-init writes the initial weights (after whitening) so that `kiln train
data/models/airbench.yaml --init FILE` starts from the same point; with --no-augment and
--no-shuffle both then see the same batches, and --print-losses shows the first losses.
Random numbers come from a CPU generator on either device, so a seed draws the same order,
translations and flips on both; the math is fp32 eager PyTorch (no torch.compile, no half
precision: airbench's own 3.09 s on an A100 uses fp16 and channels-last).
"""
import argparse
import contextlib
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def load_cifar(directory):
    def read(files):
        raw = b"".join(open(os.path.join(directory, f), "rb").read() for f in files)
        records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
        return torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy()), torch.from_numpy(records[:, 0].astype(np.int64))
    train = read([f"data_batch_{i}.bin" for i in range(1, 6)])
    test = read(["test_batch.bin"])
    return train, test


def normalize(images):
    x = images.float() / 255.0
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class Net(nn.Module):
    """Layer names as in data/models/airbench.yaml, so state dicts match kiln's checkpoints."""

    def __init__(self, widths=(64, 256, 256)):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
        c_in = 24
        for g, w in zip(("g1", "g2", "g3"), widths):
            setattr(self, f"{g}_conv1", nn.Conv2d(c_in, w, 3, padding="same", bias=False))
            setattr(self, f"{g}_bn1", nn.BatchNorm2d(w, eps=1e-12, momentum=0.4))
            setattr(self, f"{g}_conv2", nn.Conv2d(w, w, 3, padding="same", bias=False))
            setattr(self, f"{g}_bn2", nn.BatchNorm2d(w, eps=1e-12, momentum=0.4))
            c_in = w
        self.head = nn.Linear(widths[2], 10, bias=False)
        for name, m in self.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.requires_grad = False  # scale fixed at 1
            if isinstance(m, nn.Conv2d) and name != "whiten":
                torch.nn.init.dirac_(m.weight.data[: m.weight.size(1)])
        self.whiten.weight.requires_grad = False

    def forward(self, x):
        x = F.gelu(self.whiten(x))
        for g in ("g1", "g2", "g3"):
            x = getattr(self, f"{g}_conv1")(x)
            x = F.max_pool2d(x, 2)
            x = F.gelu(getattr(self, f"{g}_bn1")(x))
            x = F.gelu(getattr(self, f"{g}_bn2")(getattr(self, f"{g}_conv2")(x)))
        x = F.max_pool2d(x, 3)
        return self.head(x.flatten(1)) / 9


def init_whitening(layer, images, eps=5e-4):
    c, (h, w) = images.shape[1], layer.weight.shape[2:]
    patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w).double()
    flat = patches.view(len(patches), -1)
    cov = (flat.T @ flat) / len(flat)
    values, vectors = torch.linalg.eigh(cov, UPLO="U")
    values = values.flip(0).view(-1, 1, 1, 1)
    vectors = vectors.T.reshape(c * h * w, c, h, w).flip(0)
    scaled = (vectors / torch.sqrt(values + eps)).float()
    layer.weight.data[:] = torch.cat((scaled, -scaled))


def tta_logits(net, x):
    def mirror(v):
        return 0.5 * net(v) + 0.5 * net(v.flip(-1))
    padded = F.pad(x, (1,) * 4, "reflect")
    return 0.5 * mirror(x) + 0.25 * mirror(padded[:, :, 0:32, 0:32]) + 0.25 * mirror(padded[:, :, 2:34, 2:34])


def evaluate(net, images, labels, tta, batch=1000):
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = normalize(images[i:i + batch])
            logits = tta_logits(net, x) if tta else net(x)
            correct += (logits.argmax(1) == labels[i:i + batch]).sum().item()
    net.train()
    return correct / len(images)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=float, default=9.9)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-subset", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--no-shuffle", action="store_true")
    p.add_argument("--no-tta", action="store_true")
    p.add_argument("--init")
    p.add_argument("--save-init")
    p.add_argument("--print-losses", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    # Mixed precision as airbench runs it on a GPU: autocast to bf16/fp16, channels-last,
    # fp16 with PyTorch's GradScaler (kiln's --dtype counterpart, for tools/race.sh).
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    a = p.parse_args()
    half = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.dtype]
    if half is torch.float16 and a.device == "cpu":
        p.error("--dtype fp16 needs --device cuda (PyTorch's CPU autocast runs bf16 only)")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    (train_images, train_labels), (test_images, test_labels) = load_cifar(a.data)
    if a.train_subset:
        train_images, train_labels = train_images[:a.train_subset], train_labels[:a.train_subset]
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32, as kiln
        torch.backends.cudnn.allow_tf32 = False
    train_images, train_labels = train_images.to(dev), train_labels.to(dev)
    test_images, test_labels = test_images.to(dev), test_labels.to(dev)

    net = Net().to(dev)
    channels_last = half is not None and dev.type == "cuda"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast(device_type=dev.type, dtype=half)) if half is not None else contextlib.nullcontext
    scaler = torch.cuda.amp.GradScaler(enabled=a.dtype == "fp16")
    if a.init:
        from safetensors.torch import load_file
        net.load_state_dict(load_file(a.init, device=a.device), strict=True)
    else:
        init_whitening(net.whiten, normalize(train_images[:5000]))
    if a.save_init:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, a.save_init)

    momentum = 0.85
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = 11.5 / kilostep_scale
    wd = 0.0153 * a.batch / kilostep_scale
    lr_biases = lr * 64
    norm_biases = [p_ for k, p_ in net.named_parameters() if "bn" in k and p_.requires_grad]
    other = [p_ for k, p_ in net.named_parameters() if "bn" not in k and p_.requires_grad]
    opt = torch.optim.SGD([dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
                           dict(params=other, lr=lr, weight_decay=wd / lr)], momentum=momentum, nesterov=True)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2, reduction="none")

    per_epoch = len(train_images) // a.batch  # drop_last
    total = math.ceil(a.epochs * per_epoch)
    schedule = np.interp(np.arange(1 + total), [0, int(0.23 * total), total], [0.2, 1.0, 0.07])
    alpha = 0.95 ** 5 * (torch.arange(total + 1) / total) ** 3

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()
    ema = {k: v.clone() for k, v in net.state_dict().items()}
    gen = torch.Generator().manual_seed(a.seed)
    first_flip = (torch.rand(len(train_images), generator=gen) < 0.5).to(dev)
    normalized = normalize(train_images)
    padded = F.pad(normalized, (2,) * 4, "reflect")

    sync()
    step, losses, start = 0, [], time.time()
    stop = total if not a.steps else min(total, a.steps)
    epoch = 0
    while step < stop:
        net.whiten.bias.requires_grad = epoch < 3
        order = torch.arange(len(train_images)) if a.no_shuffle else torch.randperm(len(train_images), generator=gen)
        order = order.to(dev)
        for b in range(per_epoch):
            idx = order[b * a.batch:(b + 1) * a.batch]
            if a.no_augment:
                x = normalized[idx]
            else:
                dy = torch.randint(0, 5, (len(idx),), generator=gen).to(dev)
                dx = torch.randint(0, 5, (len(idx),), generator=gen).to(dev)
                # One copy per (dy, dx) of the 25: the crops of the images with that shift.
                x = torch.empty(len(idx), 3, 32, 32, device=dev)
                for y in range(5):
                    for z in range(5):
                        sel = ((dy == y) & (dx == z)).nonzero().flatten()
                        x[sel] = padded[idx[sel], :, y:y + 32, z:z + 32]
                flip = first_flip[idx] ^ bool(epoch % 2)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                loss = loss_fn(net(x), train_labels[idx]).sum()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * schedule[step]
            scaler.step(opt)
            scaler.update()
            losses.append(loss.detach())
            if step % 5 == 0:
                with torch.no_grad():
                    for (k, e), v in zip(ema.items(), net.state_dict().values()):
                        if v.dtype.is_floating_point:
                            e.lerp_(v, 1 - alpha[step].item())
                            v.copy_(e)
            step += 1
            if step >= total:
                with torch.no_grad():
                    for e, v in zip(ema.values(), net.state_dict().values()):
                        if v.dtype.is_floating_point:
                            v.copy_(e)
            if step >= stop:
                break
        epoch += 1
    sync()
    seconds = time.time() - start
    losses = [v.item() for v in losses]
    with autocast():
        accuracy = evaluate(net, test_images, test_labels, not a.no_tta)
    if a.print_losses:
        print("losses: " + " ".join(f"{v:.6f}" for v in losses[:a.print_losses]))
    result = {"steps": step, "epochs": a.epochs, "train_images": len(train_images), "test_accuracy": accuracy,
              "train_seconds": seconds, "seed": a.seed}
    print(json.dumps(result) if a.json else f"test accuracy {100 * accuracy:.2f}% after {step} steps, {seconds:.1f}s of training")


if __name__ == "__main__":
    sys.exit(main())
