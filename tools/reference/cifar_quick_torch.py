#!/usr/bin/env python3
"""PyTorch reference for `kiln bench data/models/cifar_quick.yaml --device cpu`: the same
network (Caffe's CIFAR-10 quick net, ceil-mode pooling), the same training step (forward,
cross-entropy, backward, SGD with momentum) on a random batch, timed the same way (warm-up,
then the median of several timed repetitions). Prints `train: N img/s (batch B, T threads)`
as its last line, like kiln bench.

Usage: /usr/bin/python3 tools/reference/cifar_quick_torch.py [--batch 128] [--threads 2]
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn


def cifar_quick():
    return nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(1024, 64), nn.Linear(64, 10))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = cifar_quick()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(a.batch, 3, 32, 32)
    y = torch.randint(0, 10, (a.batch,))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    rates = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        rates.append(a.batch * a.steps / (time.perf_counter() - t0))
    print("repetitions (img/s): " + " ".join(f"{r:.0f}" for r in rates))
    print(f"train: {statistics.median(rates):.0f} img/s (batch {a.batch}, {a.threads} threads)")


if __name__ == "__main__":
    main()
