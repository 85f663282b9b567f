#!/usr/bin/env python3
"""The device check's record: a markdown block for data/results/gpu.md (under "## Runs").

    tools/device/record.py WORK_DIR [RECORD.md]

Reads what tools/device-check.sh left in WORK_DIR so far (any file may be missing: a stage that
did not run yet, or a call cut short) and writes the record (stdout when RECORD.md is omitted):

    header.txt      date, commit            smi.csv         nvidia-smi: name, driver, memory
    stages.tsv      name, result, seconds   info.json       kiln info --json
    ctest-gpu.xml   ctest -L gpu (JUnit)    ctest-cudnn.xml ctest -L cudnn     ctest-rest.xml the rest
    train.jsonl     kiln train --json       bench.txt       kiln bench, one `train: N img/s` line each

The line under the heading is the verdict. It is FAILED when a stage failed, when nvidia-smi
shows a GPU but kiln finds none, or when a gpu-labelled test skipped for any reason but needing
more GPUs than the machine has (a skip on a GPU machine hides a test that never ran). Exit
status: 0 when the verdict is passed (or the check is not finished and nothing failed yet), 1 when
FAILED, 2 on bad usage.
"""
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

# The one reason a gpu test may skip on a GPU machine: it needs more GPUs than the machine has.
ALLOWED_GPU_SKIP = re.compile(r"needs? (at least )?\d+ GPUs|more GPUs than")


def read(work, name):
    path = os.path.join(work, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def skip_reason(case):
    """GoogleTest's `Skipped` message from the test's output, else ctest's skipped message."""
    out = case.findtext("system-out") or ""
    m = re.search(r": Skipped\s*\n(.*)", out)
    if m and m.group(1).strip():
        return m.group(1).strip()
    skipped = case.find("skipped")
    return (skipped.get("message") if skipped is not None else "") or "no reason given"


def junit_cases(text):
    """(name, result, seconds, reason) for every testcase in a ctest JUnit file."""
    cases = []
    for case in ET.fromstring(text).iter("testcase"):
        name, status = case.get("name", "?"), case.get("status", "run")
        seconds = float(case.get("time", "0") or 0)
        if case.find("failure") is not None or status == "fail":
            failure = case.find("failure")
            cases.append((name, "FAILED", seconds, failure.get("message", "") if failure is not None else ""))
        elif case.find("skipped") is not None or status in ("notrun", "disabled"):
            cases.append((name, "skipped", seconds, skip_reason(case)))
        else:
            cases.append((name, "passed", seconds, ""))
    return cases


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    work = argv[1]
    failures = []  # the verdict's reasons, most important first

    header = dict(line.split("=", 1) for line in (read(work, "header.txt") or "").splitlines() if "=" in line)
    smi_lines = (read(work, "smi.csv") or "").strip().splitlines()
    smi = [field.strip() for field in smi_lines[0].split(",")] if smi_lines else []
    smi_gpu = smi[0] if smi and smi[0] and "failed" not in smi[0].lower() and "not found" not in smi[0].lower() else ""
    info = {}
    if read(work, "info.json"):
        try:
            info = json.loads(read(work, "info.json"))
        except json.JSONDecodeError:
            failures.append("kiln info --json printed no JSON")
    devices = info.get("devices", [])
    gpu = devices[0]["name"] if devices else (smi_gpu or "no GPU")

    stages = [line.split("\t") for line in (read(work, "stages.tsv") or "").splitlines() if line.strip()]
    for name, result, *_ in stages:
        if result not in ("ok", "skipped"):
            failures.append(f"stage {name}: {result}")
    if smi_gpu and info and not devices:
        failures.insert(0, f"nvidia-smi shows {smi_gpu} (driver {smi[1] if len(smi) > 1 else '?'}) but kiln info finds "
                           f"no device (driver {info.get('driver') or 'none'}, runtime {info.get('runtime', '?')}): "
                           "a driver older than the CUDA runtime?")

    suites = {}
    for label in ("gpu", "cudnn", "rest"):
        text = read(work, f"ctest-{label}.xml")
        if text is None:
            continue
        try:
            suites[label] = junit_cases(text)
        except ET.ParseError as e:
            failures.append(f"ctest-{label}.xml is not JUnit XML ({e})")
    bad_skips = [(n, r) for n, res, _, r in suites.get("gpu", []) if res == "skipped" and not ALLOWED_GPU_SKIP.search(r)]
    if bad_skips:
        failures.insert(0, f"{len(bad_skips)} gpu test(s) skipped on a GPU machine, e.g. {bad_skips[0][0]}: {bad_skips[0][1]}")
    for label, cases in suites.items():
        failed = [n for n, res, _, _ in cases if res == "FAILED"]
        if failed:
            failures.append(f"{len(failed)} {label} test(s) failed, e.g. {failed[0]}")

    expected = header.get("stages", "").split()
    ran = [s[0] for s in stages]
    if failures:
        verdict = "**FAILED: " + "; ".join(failures) + "**"
    elif expected and ran != expected:
        missing = [s for s in expected if s not in ran]
        verdict = f"**Not finished: {len(ran)} of {len(expected)} stages ran; not run: {' '.join(missing)}**"
    else:
        verdict = "**Passed: every stage ran; no gpu test failed or skipped but for want of more GPUs.**"

    lines = [f"### {header.get('date', '?')}, {gpu}, commit {header.get('commit', 'unknown')}", "", verdict, ""]
    lines.append(f"- driver {smi[1] if len(smi) > 1 else '?'} (CUDA {info.get('driver') or 'none'} by kiln info), CUDA runtime "
                 f"{info.get('runtime', '?')}, cuDNN {info.get('cudnn', '?')}, cuBLAS {info.get('cublas', '?')}"
                 + (f"; built with {info['built_with']}" if info.get("built_with") else ""))
    if devices:
        d = devices[0]
        lines.append(f"- device 0: {d.get('name')}, compute capability {d.get('compute_capability')}, "
                     f"{d.get('memory_bytes', 0) / 2**30:.0f} GiB")
    if stages:
        lines.append("- stages: " + ", ".join(f"{s[0]} {s[1]} ({s[2] if len(s) > 2 else '?'} s)" for s in stages))

    epochs = [j for j in (json.loads(l) for l in (read(work, "train.jsonl") or "").splitlines()
                          if l.startswith("{")) if j.get("type") == "epoch"]
    if epochs:
        last = epochs[-1]
        test = last.get("test_accuracy")
        lines.append(f"- train (cifar_quick, {last.get('epoch')} epochs): train accuracy {100 * last['train_accuracy']:.2f}%, "
                     f"test accuracy {'-' if test is None else f'{100 * test:.2f}%'}, "
                     f"{last.get('images_per_sec', 0):.0f} img/s in the last epoch")
    for line in (read(work, "bench.txt") or "").splitlines():
        m = re.match(r"(\S+): train: (\d+) img/s(.*)", line)
        if m:
            lines.append(f"- bench {m.group(1)}: {m.group(2)} img/s{m.group(3)}")
        elif line.strip().startswith("cuDNN on this GPU:"):  # kiln check: the fused groups' engines
            lines.append(f"- airbench bf16 fused group, {line.strip()}")

    for label, title in (("gpu", "gpu tests (ctest -L gpu)"), ("cudnn", "cuDNN tests (ctest -L cudnn)"),
                         ("rest", "the rest of the suite (ctest -LE 'slow|gpu|cudnn')")):
        cases = suites.get(label)
        if cases is None:
            continue
        counts = {}
        for _, res, _, _ in cases:
            counts[res] = counts.get(res, 0) + 1
        lines += ["", f"{title}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), ""]
        # Every gpu and cuDNN test by name; of the rest, only what did not pass.
        shown = cases if label != "rest" else [c for c in cases if c[1] != "passed"]
        if shown:
            lines.append("| test | result | s |")
            lines.append("| --- | --- | --- |")
            for name, res, seconds, reason in shown:
                lines.append(f"| {name} | {res}{': ' + reason.replace('|', '/') if reason else ''} | {seconds:.2f} |")

    text = "\n".join(lines) + "\n"
    if len(argv) == 3:
        with open(argv[2] + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(argv[2] + ".tmp", argv[2])
    else:
        sys.stdout.write(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
