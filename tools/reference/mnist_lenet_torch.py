#!/usr/bin/env python3
"""PyTorch reference for `kiln train data/models/mnist_lenet.yaml` on Fashion-MNIST (or
MNIST): the same network (LeNet-5 widened, batchnorm after each conv), the same recipe (SGD,
Nesterov momentum 0.9, lr 0.05, coupled weight decay 5e-4, batch 128, a cosine schedule per
step over the whole run, no augmentation, a fresh shuffle per epoch), the same normalization
(the training images' mean and std). PyTorch's default initialization, which kiln's
follows. Prints one JSON line per epoch: {"epoch", "test_accuracy", "test_loss", "seconds"}.

Usage: /usr/bin/python3 tools/reference/mnist_lenet_torch.py [--data /usr/share/datasets/fashion-mnist]
       [--epochs 5] [--threads 2] [--seed 0]
"""
import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(directory, name):
    path = os.path.join(directory, name)
    opener = open if os.path.exists(path) else gzip.open
    with opener(path if os.path.exists(path) else path + ".gz", "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train_x = torch.from_numpy(read_idx(a.data, "train-images-idx3-ubyte").copy()).float().div(255).unsqueeze(1)
    train_y = torch.from_numpy(read_idx(a.data, "train-labels-idx1-ubyte").astype(np.int64))
    test_x = torch.from_numpy(read_idx(a.data, "t10k-images-idx3-ubyte").copy()).float().div(255).unsqueeze(1)
    test_y = torch.from_numpy(read_idx(a.data, "t10k-labels-idx1-ubyte").astype(np.int64))
    mean, std = train_x.mean().item(), train_x.std(unbiased=False).item()
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std

    model = lenet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    batch = 128
    per_epoch = math.ceil(len(train_x) / batch)
    total = per_epoch * a.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0))))
    start = time.time()
    for epoch in range(a.epochs):
        model.train()
        order = torch.randperm(len(train_x))
        for b in range(per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        correct, loss_sum = 0, 0.0
        with torch.no_grad():
            for b in range(0, len(test_x), 1000):
                out = model(test_x[b:b + 1000])
                loss_sum += F.cross_entropy(out, test_y[b:b + 1000], reduction="sum").item()
                correct += (out.argmax(1) == test_y[b:b + 1000]).sum().item()
        print(json.dumps({"epoch": epoch + 1, "test_accuracy": correct / len(test_x), "test_loss": loss_sum / len(test_x),
                          "seconds": round(time.time() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
