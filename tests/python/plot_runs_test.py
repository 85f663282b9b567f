#!/usr/bin/env python3
"""tools/plot-runs.py on real kiln runs: a short run, two runs overlaid, and a run of a few
steps with no epoch record yet each give a PNG of the documented size that is not blank; a
folder without metrics.jsonl is an error that says so.

    plot_runs_test.py KILN_BINARY SOURCE_DIR WORK_DIR

Exit 77 (a skip) when matplotlib is not installed.
"""
import os
import shutil
import struct
import subprocess
import sys
import zlib

try:
    import matplotlib  # noqa: F401
    import matplotlib.image
except ImportError:
    print("skipped: matplotlib is not installed (Debian: apt-get install python3-matplotlib)")
    sys.exit(77)

kiln, source, work = sys.argv[1], sys.argv[2], sys.argv[3]
plot = [sys.executable, os.path.join(source, "tools", "plot-runs.py")]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL:", message)


def run(command):
    r = subprocess.run(command, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def png_size(path):
    """(width, height) from the IHDR chunk, after checking the signature and the chunk's CRC."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG (signature {data[:8]!r})"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, f"{path}: first chunk is {kind!r}, not IHDR"
    width, height = struct.unpack(">II", data[16:24])
    (crc,) = struct.unpack(">I", data[29:33])
    assert crc == zlib.crc32(data[12:29]), f"{path}: IHDR CRC mismatch"
    return width, height, len(data)


def check_png(path, what):
    if not os.path.exists(path):
        check(False, f"{what}: {path} was not written")
        return 0
    width, height, size = png_size(path)
    check((width, height) == (1200, 800), f"{what}: {width}x{height}, expected 1200x800 (12x8 inches at 100 dpi)")
    check(size > 20000, f"{what}: only {size} bytes")
    pixels = matplotlib.image.imread(path)[:, :, :3]
    # Not blank: many distinct colours, and coloured (not grey) pixels, the curves.
    colours = {tuple(p) for p in (pixels.reshape(-1, 3) * 255).astype(int)[::7]}
    coloured = (abs(pixels[:, :, 0] - pixels[:, :, 2]) > 0.2).sum()
    check(len(colours) > 50, f"{what}: {len(colours)} distinct colours: blank?")
    check(coloured > 300, f"{what}: {coloured} coloured pixels: no curve drawn?")
    return coloured


data = os.path.join(work, "data")
run([kiln, "synth", "--out", data, "--train", "64", "--test", "16"])
tiny = os.path.join(source, "tests", "fuzz", "tiny.yaml")
first, second = os.path.join(work, "first"), os.path.join(work, "second")
run([kiln, "train", tiny, "--data", data, "--steps", "4", "--batch", "16", "--threads", "1", "--out", first])
run([kiln, "train", tiny, "--data", data, "--epochs", "2", "--batch", "16", "--threads", "1", "--lr", "0.05",
     "--out", second])

one = os.path.join(work, "one.png")
run(plot + [first, "-o", one])

both = os.path.join(work, "both.png")
run(plot + [first, second, "-o", both, "--label", "lr 0.01"])
check(check_png(both, "two runs") > check_png(one, "one run"), "two runs drew no more curve than one")

# A run inside its first epoch: step records only.
early = os.path.join(work, "early")
os.makedirs(early)
with open(os.path.join(first, "metrics.jsonl")) as f, open(os.path.join(early, "metrics.jsonl"), "w") as g:
    g.writelines(line for line in f if '"type":"step"' in line)
with open(os.path.join(early, "metrics.jsonl")) as f:
    check(len(f.readlines()) == 4, "the early run should hold the 4 step records")
early_png = os.path.join(work, "early.png")
run(plot + [early, "-o", early_png])
check_png(early_png, "steps only")

missing = subprocess.run(plot + [os.path.join(work, "nothing-here"), "-o", os.path.join(work, "x.png")],
                         capture_output=True, text=True)
check(missing.returncode == 1, f"a folder without metrics.jsonl: exit {missing.returncode}, expected 1")
check("no metrics.jsonl" in missing.stderr, f"a folder without metrics.jsonl: {missing.stderr!r}")
check(not os.path.exists(os.path.join(work, "x.png")), "a failed plot wrote an image")

if failures:
    sys.exit(f"{len(failures)} failure(s)")
print("plot-runs.py: one run, two runs and a steps-only run plotted")
