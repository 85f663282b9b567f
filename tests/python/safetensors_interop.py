#!/usr/bin/env python3
"""kiln's safetensors files against the reference implementation and PyTorch.

Driven by tests/unit/safetensors_test.cpp (SafetensorsInterop), which writes and reads the
other half of each exchange:

  safetensors_interop.py write DIR   writes DIR/python_model.safetensors (the state dict of a
                                     torch model equivalent to the test's kiln graph) and
                                     DIR/python_dtypes.safetensors (F16, BF16, F64, F32, I64)
  safetensors_interop.py check DIR   reads DIR/kiln_model.safetensors and
                                     DIR/kiln_misc.safetensors, written by kiln, and loads the
                                     first into the torch model with strict=True

Exit status: 0 all checks passed, 1 a check failed, 2 usage, 3 python's torch or safetensors
is missing (the C++ test skips, quoting the message).

The values follow pattern() below; the C++ test computes the same numbers, so each side
checks the other's values exactly (every value is a multiple of 1/8 below 2, exact in fp16).
"""

import sys
from collections import OrderedDict
from pathlib import Path

EXIT_FAILED, EXIT_USAGE, EXIT_MISSING = 1, 2, 3

try:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
except ImportError as e:  # the test reports this as its skip reason
    print(f"skip: {e} (install with: python3 -m pip install safetensors torch)")
    sys.exit(EXIT_MISSING)

NUM_BATCHES_TRACKED = 1234567890123  # over 2**32, so a 32-bit round trip would show


def seed_of(name):
    return sum(name.encode()) % 23


def pattern(name, numel):
    seed = seed_of(name)
    return [((i * 7 + seed) % 23 - 11) / 8.0 for i in range(numel)]


def tiny_net():
    """The torch twin of the test's kiln graph: conv(4, 3) 'conv1', batchnorm 'bn',
    flatten, linear(10) 'fc' on a 3x8x8 input."""
    nn = torch.nn
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 4, 3)),
        ("bn", nn.BatchNorm2d(4)),
        ("flat", nn.Flatten()),
        ("fc", nn.Linear(4 * 6 * 6, 10)),
    ]))


class Checker:
    def __init__(self):
        self.failures = []

    def expect(self, ok, message):
        if not ok:
            self.failures.append(message)
        return ok

    def tensor(self, name, actual, dtype, shape, values):
        if not self.expect(actual.dtype == dtype, f"{name}: dtype {actual.dtype}, expected {dtype}"):
            return
        if not self.expect(list(actual.shape) == list(shape),
                           f"{name}: shape {list(actual.shape)}, expected {list(shape)}"):
            return
        got = actual.reshape(-1).tolist()
        self.expect(got == list(values), f"{name}: values {got[:8]}..., expected {list(values)[:8]}...")


def write(out):
    torch.manual_seed(0)
    net = tiny_net()
    state = net.state_dict()
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(NUM_BATCHES_TRACKED, dtype=torch.int64)
        else:
            state[name] = torch.tensor(pattern(name, value.numel()), dtype=torch.float32).reshape(value.shape)
    save_file(state, str(out / "python_model.safetensors"), metadata={"format": "pt"})

    dtypes = {
        # 1, -2.5, the smallest normal and subnormal, the largest finite, negative zero
        "f16": torch.tensor([1.0, -2.5, 2.0**-14, 2.0**-24, 65504.0, -0.0], dtype=torch.float16).reshape(2, 3),
        "bf16": torch.tensor([1.0, -2.5, 3.140625, 2.0**100], dtype=torch.bfloat16),
        "f64": torch.tensor([0.1, -1e-3, 123456.789, 2.0**-30], dtype=torch.float64).reshape(2, 2),
        "f32": torch.tensor([0.5, -0.25, 1e-20], dtype=torch.float32),
        "i64": torch.tensor([[-(2**40), 0, 7], [1, -1, 2**62]], dtype=torch.int64),
        "i64_scalar": torch.tensor(42, dtype=torch.int64),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }
    save_file(dtypes, str(out / "python_dtypes.safetensors"),
              metadata={"format": "pt", "written_by": "safetensors_interop.py"})
    return 0


def check(out):
    c = Checker()

    model_path = str(out / "kiln_model.safetensors")
    state = load_file(model_path)
    with safe_open(model_path, framework="pt") as f:
        c.expect(f.metadata() == {"producer": "kiln", "format": "pt"}, f"kiln_model metadata: {f.metadata()}")
    net = tiny_net()
    expected_names = list(net.state_dict().keys())
    c.expect(sorted(state.keys()) == sorted(expected_names),
             f"kiln_model names {sorted(state.keys())}, torch expects {sorted(expected_names)}")
    for name, reference in net.state_dict().items():
        if name not in state:
            continue
        if name.endswith("num_batches_tracked"):
            c.tensor(name, state[name], torch.int64, [], [NUM_BATCHES_TRACKED])
        else:
            c.tensor(name, state[name], torch.float32, reference.shape, pattern(name, reference.numel()))

    # The PyTorch layout claim: torch itself accepts every name and shape, strictly.
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        c.expect(False, f"load_state_dict(strict=True) refused kiln's file: {e}")
    else:
        c.expect(net.conv1.weight.flatten().tolist() == pattern("conv1.weight", 4 * 3 * 3 * 3),
                 "conv1.weight differs after load_state_dict")
        c.expect(int(net.bn.num_batches_tracked) == NUM_BATCHES_TRACKED, "bn.num_batches_tracked differs after loading")
        net.eval()  # the values are a pattern, not a trained model: only the shapes flow
        with torch.no_grad():
            logits = net(torch.ones(2, 3, 8, 8))
        c.expect(list(logits.shape) == [2, 10], f"forward pass gave shape {list(logits.shape)}")

    misc_path = str(out / "kiln_misc.safetensors")
    misc = load_file(misc_path)
    with safe_open(misc_path, framework="pt") as f:
        c.expect(f.metadata() is None, f"kiln_misc metadata: {f.metadata()} (kiln omits an empty map)")
    c.expect(list(misc.keys()) and sorted(misc.keys()) == ["empty", "i64", "scalar"], f"kiln_misc names {list(misc)}")
    if "i64" in misc:
        c.tensor("i64", misc["i64"], torch.int64, [2, 3], [-(2**40), 0, 7, 1, -1, 2**62])
    if "scalar" in misc:
        c.tensor("scalar", misc["scalar"], torch.float32, [], [-0.75])
    if "empty" in misc:
        c.tensor("empty", misc["empty"], torch.float32, [0, 3], [])

    for failure in c.failures:
        print(f"FAIL: {failure}")
    return EXIT_FAILED if c.failures else 0


def main(argv):
    if len(argv) != 3 or argv[1] not in ("write", "check") or not Path(argv[2]).is_dir():
        print(__doc__)
        return EXIT_USAGE
    out = Path(argv[2])
    return write(out) if argv[1] == "write" else check(out)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
