#!/usr/bin/env python3
"""Any kiln model spec as a PyTorch module, for timing kiln against PyTorch on the same net.

The layers come from `kiln check --json` (blocks expanded, every option resolved: strides,
`same` padding), so what PyTorch runs is the graph kiln runs, layer for layer, with the same
parameter names. Two uses:

  spec_torch.py KILN SPEC --bench [--batch B] [--threads T]   one training step at a time,
      SGD with momentum on random data, as `kiln bench` does; the last line is
      `train: N img/s (batch B, T threads)` like kiln's
  spec_torch.py KILN SPEC --profile [--batch B] [--threads T]  PyTorch's autograd profiler
      over a few steps: self CPU time per op, forward and backward, per step
  spec_torch.py KILN SPEC --kiln-profile [--batch B] [--threads T]  kiln bench's per-layer
      table summed by op, in the same form, to set beside it

Needs torch (Debian's python3-torch); run with /usr/bin/python3.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def layers_of(kiln, spec):
    """The layers of `spec` as kiln's check --json lists them (input first)."""
    out = subprocess.run([kiln, "check", spec, "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"kiln check {spec} failed:\n{out.stderr or out.stdout}")
    return json.loads(out.stdout)


class SpecNet(nn.Module):
    """kiln's layer graph: modules under kiln's layer names (dots become a ModuleDict's keys
    with '.' replaced, so parameter names differ from kiln's only in that)."""

    def __init__(self, doc):
        super().__init__()
        self.layers = doc["layers"]
        self.mods = nn.ModuleDict()
        shapes = {l["name"]: l["output"] for l in self.layers}
        for l in self.layers[1:]:
            op, a, name = l["op"], l.get("attrs", {}), l["name"]
            src = shapes[l["inputs"][0]] if l["inputs"] else None
            key = self.key(name)
            if op == "conv":
                t, b, lt, r = a["pad"]
                conv = nn.Conv2d(src[0], a["out"], tuple(a["kernel"]), stride=tuple(a["stride"]),
                                 dilation=tuple(a["dilation"]), groups=a["groups"], bias=a["bias"],
                                 padding=(t, lt) if (t == b and lt == r) else 0)
                self.mods[key] = conv if (t == b and lt == r) else nn.Sequential(nn.ZeroPad2d((lt, r, t, b)), conv)
            elif op == "batchnorm":
                bn = (nn.BatchNorm2d if len(src) == 3 else nn.BatchNorm1d)(src[0], eps=a["eps"], momentum=a["momentum"])
                if not a["weight"]:
                    bn.weight.requires_grad_(False)
                if not a["bias"]:
                    bn.bias.requires_grad_(False)
                self.mods[key] = bn
            elif op == "groupnorm":
                self.mods[key] = nn.GroupNorm(a["groups"], src[0], eps=a["eps"])
            elif op == "linear":
                self.mods[key] = nn.Linear(src[0], a["out"], bias=a["bias"])

    @staticmethod
    def key(name):
        return name.replace(".", "_")

    def forward(self, x):
        values = {"input": x}
        out = x
        for l in self.layers[1:]:
            op, a = l["op"], l.get("attrs", {})
            ins = [values[n] for n in l["inputs"]]
            v = ins[0] if ins else None
            if op in ("conv", "batchnorm", "groupnorm", "linear"):
                out = self.mods[self.key(l["name"])](v)
            elif op in ("maxpool", "avgpool"):
                t, b, lt, r = a["pad"]
                pool = F.max_pool2d if op == "maxpool" else F.avg_pool2d
                out = pool(v, tuple(a["kernel"]), tuple(a["stride"]), (t, lt), ceil_mode=a["ceil"])
            elif op == "global_avgpool":
                out = v.mean(dim=(2, 3), keepdim=True)
            elif op == "global_maxpool":
                out = v.amax(dim=(2, 3), keepdim=True)
            elif op == "relu":
                out = F.relu(v)
            elif op == "leaky_relu":
                out = F.leaky_relu(v, a["slope"])
            elif op == "gelu":
                out = F.gelu(v)
            elif op == "silu":
                out = F.silu(v)
            elif op == "sigmoid":
                out = torch.sigmoid(v)
            elif op == "tanh":
                out = torch.tanh(v)
            elif op == "dropout":
                out = F.dropout(v, a["p"], self.training)
            elif op == "flatten":
                out = v.flatten(1)
            elif op == "scale":
                out = v * a["factor"]
            elif op == "add":
                out = ins[0]
                for other in ins[1:]:
                    out = out + other
            elif op == "concat":
                out = torch.cat(ins, dim=1)
            elif op == "mul":
                g = ins[1]
                out = ins[0] * (g.view(g.shape[0], -1, 1, 1) if g.dim() == 2 and ins[0].dim() == 4 else g)
            elif op == "upsample":
                out = F.interpolate(v, scale_factor=tuple(float(s) for s in a["scale"]), mode="nearest")
            else:
                sys.exit(f"spec_torch.py: op {op} is not translated")
            values[l["name"]] = out
        return out


def make(kiln, spec, batch, threads):
    doc = layers_of(kiln, spec)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SpecNet(doc)
    c, h, w = doc["layers"][0]["output"]
    classes = doc["layers"][-1]["output"][0]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    x = torch.randn(batch, c, h, w)
    y = torch.randint(0, classes, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    return doc, step


def kiln_profile(kiln, spec, batch, threads):
    """kiln bench's per-layer milliseconds, summed by op."""
    out = subprocess.run([kiln, "bench", spec, "--device", "cpu", "--batch", str(batch), "--threads", str(threads),
                          "--json", "--repeats", "3", "--steps", "2"], capture_output=True, text=True, check=True)
    d = json.loads(out.stdout[:out.stdout.rstrip().rfind("\n")])  # the last line is the summary
    by = {}
    for l in d["layers"]:
        r = by.setdefault(l["op"], [0.0, 0.0, 0])
        r[0] += l["forward_ms"]
        r[1] += l["backward_ms"]
        r[2] += 1
    total = sum(f + b for f, b, _ in by.values())
    print(f"{d['model']}: kiln, batch {batch}, {threads} threads, ms per step by op (layers timed one by one)")
    for op, (f, b, n) in sorted(by.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
        print(f"  {op:<16} forward {f:8.2f} ms  backward {b:8.2f} ms  {100 * (f + b) / total:5.1f}%  x{n}")
    print(f"  {'total':<16} {total:8.2f} ms; whole steps: {d['images_per_sec']:.0f} img/s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("kiln")
    p.add_argument("spec")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="self CPU time per op instead of img/s")
    p.add_argument("--kiln-profile", action="store_true", help="kiln bench's layers summed by op")
    a = p.parse_args()
    if a.kiln_profile:
        return kiln_profile(a.kiln, a.spec, a.batch, a.threads)
    doc, step = make(a.kiln, a.spec, a.batch, a.threads)
    for _ in range(a.warmup):
        step()
    if a.profile:
        with torch.autograd.profiler.profile() as prof:
            for _ in range(a.steps):
                step()
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in rows)
        print(f"{doc['model']}: PyTorch {torch.__version__}, batch {a.batch}, {a.threads} threads, "
              f"self CPU ms per step by op ({a.steps} steps)")
        for e in rows:
            ms = e.self_cpu_time_total / 1000 / a.steps
            if ms >= 0.05:
                print(f"  {e.key:<44} {ms:9.2f} ms  {100 * e.self_cpu_time_total / total:5.1f}%  x{e.count // a.steps}")
        print(f"  {'total':<44} {total / 1000 / a.steps:9.2f} ms")
        return
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
