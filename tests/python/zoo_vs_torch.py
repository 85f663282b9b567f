#!/usr/bin/env python3
"""kiln's model zoo against the PyTorch definitions it names its layers after
(tools/reference/cifar_models.py).

For each of resnet18, vgg16, mobilenetv2, resnet56 and resnet110 in SPEC_DIR:
  - `kiln check --json` counts exactly the PyTorch model's parameters;
  - the PyTorch model's state_dict, saved as safetensors, loads into kiln by name
    (`kiln eval --weights` on a few synthetic images exits 0; a missing, extra or misshapen
    tensor makes it exit 1 naming the tensor).
Then ResNet-18 gives the same answers: PyTorch's ResNet-18 with random weights and random
batchnorm running statistics labels 64 synthetic images with its own eval-mode predictions
(after the normalization kiln eval applies), and kiln eval must score 100% on them; kiln
predict's class probabilities on a few of the images, saved as PNG, must match PyTorch's
softmax.

Usage: zoo_vs_torch.py KILN_BIN WORKDIR [SPEC_DIR]   (SPEC_DIR default: the repo's data/models)
Exit codes: 0 match, 1 mismatch, 2 usage, 77 PyTorch, numpy or safetensors missing (the test skips).
"""
import json
import os
import struct
import subprocess
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

try:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, os.path.join(REPO, "tools", "reference"))
    import cifar_models
    import kiln_torch as kt  # beside this script
except ImportError as e:  # the ctest registration maps 77 to a skip
    print(f"skipped: {e}")
    sys.exit(77)

SAME_ANSWERS_MODEL = "resnet18"
SAME_ANSWERS_IMAGES = 64
MIN_MARGIN = 1e-3     # smallest top-1 minus top-2 logit gap PyTorch may have on a kept image
PROBABILITY_TOL = 1e-4
PNG_IMAGES = 4        # of the kept images, compared class probability by class probability
# CIFAR-10's published constants: what kiln eval uses for CIFAR-10 data and a spec without
# `normalize:` (default_normalization() in src/data/split.cpp).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class Mismatch(Exception):
    pass


def run_kiln(kiln, *args):
    """kiln's stdout; a Mismatch with its stderr where it fails."""
    result = subprocess.run([kiln, *args], capture_output=True, text=True)
    if result.returncode != 0:
        said = result.stderr.strip() or result.stdout.strip()  # check --json reports on stdout
        raise Mismatch(f"`kiln {' '.join(args)}` exited {result.returncode}:\n{said}")
    return result.stdout


def spec_normalization(spec_path):
    """The mean and std kiln eval applies with CIFAR-10 data: the spec's `normalize:`, where
    it has one, else CIFAR-10's published constants."""
    text = open(spec_path).read()
    mean, std = list(CIFAR10_MEAN), list(CIFAR10_STD)
    if "normalize" not in text:
        return mean, std
    try:
        import yaml
    except ImportError:
        raise Mismatch(f"{spec_path} has normalize:, and reading it needs PyYAML, which is missing")
    normalize = (yaml.safe_load(text).get("train") or {}).get("normalize") or {}

    def number(v):  # kiln reads arithmetic such as 1/9 too
        if isinstance(v, str) and "/" in v:
            top, bottom = v.split("/", 1)
            return float(top) / float(bottom)
        return float(v)

    if "mean" in normalize:
        mean = [number(v) for v in normalize["mean"]]
    if "std" in normalize:
        std = [number(v) for v in normalize["std"]]
    return mean, std


def normalized(images, mean, std):
    """kiln's arithmetic (src/math/augment.hpp): pixel * (1/255) - mean, times 1/std, in fp32."""
    x = images.float() * torch.tensor(1.0 / 255.0, dtype=torch.float32)
    x = x - torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    return x * (1.0 / torch.tensor(std, dtype=torch.float32)).view(1, 3, 1, 1)


def save_state(model, path):
    save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, path)


def check_loads(kiln, work, name, spec, data):
    """Parameter count and load-by-name of one zoo model; returns the PyTorch count."""
    model = cifar_models.build(name)
    want = cifar_models.parameter_count(model)
    report = json.loads(run_kiln(kiln, "check", spec, "--json"))
    got = report["totals"]["params"]
    if got != want:
        raise Mismatch(f"{name}: kiln check counts {got:,} parameters, PyTorch's {name} has {want:,} "
                       f"(published: {cifar_models.PARAMS[name]:,})")
    weights = os.path.join(work, f"{name}.safetensors")
    save_state(model, weights)
    run_kiln(kiln, "eval", spec, "--weights", weights, "--data", data, "--device", "cpu", "--json")
    print(f"{name}: {got:,} parameters as in PyTorch; its state_dict ({len(model.state_dict())} tensors) loads by name")
    return want


def randomize(model, images):
    """Random batchnorm affine parameters and running statistics that matter: the statistics
    of the model's own activations on `images` (so the logits stay O(1)), then each mean moved
    by up to half a standard deviation and each variance scaled by 0.5 to 2."""
    generator = torch.Generator().manual_seed(11)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(0.5 + torch.rand(bn.weight.shape, generator=generator))
            bn.bias.copy_(0.2 * torch.randn(bn.bias.shape, generator=generator))
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average over the one batch: its exact statistics
        model.train()
        model(images)
        for bn in bns:
            sd = bn.running_var.sqrt()
            bn.running_mean.add_(0.5 * sd * (2 * torch.rand(sd.shape, generator=generator) - 1))
            bn.running_var.mul_(torch.exp(torch.log(torch.tensor(2.0)) * (2 * torch.rand(sd.shape, generator=generator) - 1)))
            bn.momentum = 0.1
            bn.num_batches_tracked.fill_(0)
    model.eval()
    spread_classes(model, images)


def spread_classes(model, images):
    """A random classifier on features that are all positive and alike predicts one class for
    every image: the shared part of the features decides. Centre the classifier on `images`'
    mean feature vector (its bias cancels it) and scale its weight to logits of unit spread, so
    that the differences between images decide."""
    head = model.linear
    features = []
    hook = head.register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))
    with torch.no_grad():
        model(images)
        hook.remove()
        centred = features[0] - features[0].mean(dim=0)
        head.weight.mul_(1.0 / (centred @ head.weight.t()).std().clamp_min(1e-12))
        head.bias.copy_(-head.weight @ features[0].mean(dim=0))


def write_cifar_test(directory, images, labels):
    """Replaces the test split of a CIFAR-10 binary set (label byte, 3072 pixel bytes a record)."""
    records = np.concatenate([labels.numpy().astype(np.uint8)[:, None], images.reshape(len(labels), -1).numpy()], axis=1)
    with open(os.path.join(directory, "test_batch.bin"), "wb") as f:
        f.write(records.tobytes())


def read_cifar_test(directory):
    raw = np.frombuffer(open(os.path.join(directory, "test_batch.bin"), "rb").read(), dtype=np.uint8).reshape(-1, 3073)
    return torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy())


def write_png(path, image):
    """An 8-bit RGB PNG of a 3 x H x W uint8 tensor."""
    _, height, width = image.shape
    rows = image.permute(1, 2, 0).contiguous().numpy().reshape(height, width * 3)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on every row

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def check_same_answers(kiln, work, name, spec):
    """kiln eval and kiln predict against PyTorch's eval-mode forward of the same weights."""
    data = os.path.join(work, "same_answers")
    subprocess.run([kiln, "synth", "--out", data, "--train", "5", "--test", str(SAME_ANSWERS_IMAGES), "--seed", "5"],
                   check=True, stdout=subprocess.DEVNULL)
    mean, std = spec_normalization(spec)
    images = read_cifar_test(data)
    x = normalized(images, mean, std)
    model = cifar_models.build(name)
    randomize(model, x)
    with torch.no_grad():
        logits = model(x)
    top2 = logits.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1]) >= MIN_MARGIN
    labels = logits.argmax(dim=1)
    kept = int(keep.sum())
    if kept < SAME_ANSWERS_IMAGES // 2:
        raise Mismatch(f"{name}: only {kept} of {SAME_ANSWERS_IMAGES} images have a top-1 logit margin of "
                       f"{MIN_MARGIN}: the random model is degenerate, change the seed")
    classes = sorted(set(labels[keep].tolist()))
    if len(classes) < 2:
        raise Mismatch(f"{name}: PyTorch predicts class {classes[0]} for every image; a test of identical answers "
                       "needs a model that distinguishes them, change the seed")
    write_cifar_test(data, images[keep], labels[keep])
    weights = os.path.join(work, f"{name}_random_bn.safetensors")
    save_state(model, weights)

    result = json.loads(run_kiln(kiln, "eval", spec, "--weights", weights, "--data", data, "--device", "cpu", "--json"))
    if result["count"] != kept or result["accuracy"] != 1.0:
        confusion = result.get("confusion", [])
        wrong = [(t, p, n) for t, row in enumerate(confusion) for p, n in enumerate(row) if p != t and n]
        raise Mismatch(f"{name}: kiln eval agrees with PyTorch on {result['accuracy'] * result['count']:.0f} of "
                       f"{result['count']} images (PyTorch's predictions, {kept} images); disagreements "
                       f"(PyTorch's class, kiln's class, images): {wrong}")
    print(f"{name}: kiln eval predicts PyTorch's class for all {kept} images "
          f"({SAME_ANSWERS_IMAGES - kept} dropped for a margin under {MIN_MARGIN}; classes {classes})")

    kept_images = images[keep][:PNG_IMAGES]
    pngs = []
    for k, image in enumerate(kept_images):
        pngs.append(os.path.join(work, f"image{k}.png"))
        write_png(pngs[-1], image)
    answer = json.loads(run_kiln(kiln, "predict", spec, *pngs, "--weights", weights, "--top", "10", "--no-resize",
                                 "--device", "cpu", "--json"))
    with torch.no_grad():
        want = torch.softmax(logits[keep][:PNG_IMAGES].double(), dim=1)
    if len(answer) != len(pngs):
        raise Mismatch(f"{name}: kiln predict answered for {len(answer)} of {len(pngs)} images")
    worst = 0.0
    for k, entry in enumerate(answer):
        if entry["file"] != pngs[k]:
            raise Mismatch(f"{name}: kiln predict's answer {k} is for {entry['file']}, expected {pngs[k]}")
        got = torch.zeros(10, dtype=torch.float64)
        for c in entry["top"]:
            got[c["index"]] = c["probability"]
        diff = (got - want[k]).abs().max().item()
        worst = max(worst, diff)
        if diff > PROBABILITY_TOL:
            raise Mismatch(f"{name}: kiln predict's probabilities for {pngs[k]} differ from PyTorch's softmax by "
                           f"{diff:.2e} (tolerance {PROBABILITY_TOL}): kiln {got.tolist()} vs PyTorch {want[k].tolist()}")
    print(f"{name}: kiln predict's class probabilities on {len(pngs)} PNG images match PyTorch's softmax "
          f"(largest difference {worst:.2e})")


def main():
    if len(sys.argv) not in (3, 4):
        print("usage: zoo_vs_torch.py KILN_BIN WORKDIR [SPEC_DIR]", file=sys.stderr)
        return 2
    kiln, work = sys.argv[1], sys.argv[2]
    spec_dir = sys.argv[3] if len(sys.argv) == 4 else os.path.join(REPO, "data", "models")
    kt.fresh_workdir(work)
    torch.set_num_threads(2)
    data = os.path.join(work, "synth")
    subprocess.run([kiln, "synth", "--out", data, "--train", "5", "--test", "2", "--seed", "3"], check=True,
                   stdout=subprocess.DEVNULL)
    failures = []
    for name in cifar_models.NAMES:
        spec = os.path.join(spec_dir, f"{name}.yaml")
        try:
            check_loads(kiln, work, name, spec, data)
            if name == SAME_ANSWERS_MODEL:
                check_same_answers(kiln, work, name, spec)
        except Mismatch as e:
            print(f"MISMATCH {e}")
            failures.append(name)
    if failures:
        print(f"failed: {', '.join(failures)}")
        return 1
    print("ok: the zoo matches PyTorch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
