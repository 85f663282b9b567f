#!/usr/bin/env python3
"""Training curves of kiln runs, after Caffe's tools/extra/plot_training_log.py.

    tools/plot-runs.py RUN_DIR... [-o curves.png] [--label NAME]...

Reads each run's metrics.jsonl (a run folder, or the file itself) and draws one figure of
four panels: loss and accuracy (rows) against optimizer step and against epoch (columns).
Train curves are solid (the loss of every step, thin, and each epoch's mean train loss and
train accuracy, with markers), test curves dashed (one point per evaluated epoch). Several
runs are overlaid, one colour each, named by their folder or by --label (in order). A run of a
few steps that has no epoch record yet draws its step losses alone.

Exit codes: 0, 1 when a run has no readable metrics.jsonl, 2 for a usage error, 3 when
matplotlib is not installed (Debian: apt-get install python3-matplotlib).
"""
import argparse
import json
import os
import sys


def read_run(path):
    """The step and epoch records of a run folder or metrics.jsonl, in file order."""
    file = os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path
    steps, epochs = [], []
    with open(file) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if not isinstance(record, dict):
                continue
            kind = record.get("type") or ("epoch" if "train_loss" in record else "step" if "loss" in record else None)
            if kind == "step":
                steps.append(record)
            elif kind == "epoch":
                epochs.append(record)
    return steps, epochs


def steps_per_epoch(steps, epochs):
    """Optimizer steps in a whole epoch: the first epoch's, once a later one exists, else the
    steps seen so far in the longest (so a run inside its first epoch spans up to 1)."""
    counts = {}
    for s in steps:
        counts[s["epoch"]] = counts.get(s["epoch"], 0) + 1
    if len(counts) > 1 and 1 in counts:
        return counts[1]
    finished = [e["step"] for e in epochs if e["epoch"] == 1]
    if finished:
        return finished[-1]
    return max(counts.values(), default=1)


def run_name(path):
    path = os.path.normpath(path)
    if os.path.basename(path) == "metrics.jsonl":
        path = os.path.dirname(path) or "."
    return os.path.basename(os.path.abspath(path))


def main():
    parser = argparse.ArgumentParser(description="Plot the training curves of kiln runs (their metrics.jsonl).")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a kiln run folder (or its metrics.jsonl)")
    parser.add_argument("-o", "--output", default="curves.png", help="image to write (default: curves.png)")
    parser.add_argument("--label", action="append", default=[], help="a run's name in the legend, in the runs' order")
    parser.add_argument("--title", default=None, help="the figure's title")
    args = parser.parse_args()
    if len(args.label) > len(args.runs):
        parser.error(f"{len(args.label)} --label for {len(args.runs)} runs")

    runs = []
    for i, path in enumerate(args.runs):
        try:
            steps, epochs = read_run(path)
        except OSError as e:
            print(f"plot-runs.py: {path}: no metrics.jsonl to read ({e.strerror})", file=sys.stderr)
            return 1
        if not steps and not epochs:
            print(f"plot-runs.py: {path}: metrics.jsonl holds no step or epoch record yet", file=sys.stderr)
            return 1
        runs.append((args.label[i] if i < len(args.label) else run_name(path), steps, epochs))

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot-runs.py: matplotlib is not installed (Debian: apt-get install python3-matplotlib)", file=sys.stderr)
        return 3

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=100, sharey="row")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, steps, epochs) in enumerate(runs):
        colour = colours[i % len(colours)]
        per_epoch = steps_per_epoch(steps, epochs)
        for col, x_of in enumerate((lambda r: r["step"], lambda r: r["step"] / per_epoch)):
            loss, accuracy = axes[0][col], axes[1][col]
            if steps:
                loss.plot([x_of(s) for s in steps], [s["loss"] for s in steps], color=colour, linewidth=0.8,
                          alpha=0.5, label=f"{name} train (step)")
            if epochs:
                xs = [x_of(e) for e in epochs]
                loss.plot(xs, [e["train_loss"] for e in epochs], "o-", color=colour, markersize=4,
                          label=f"{name} train")
                accuracy.plot(xs, [100 * e["train_accuracy"] for e in epochs], "o-", color=colour, markersize=4,
                              label=f"{name} train")
            # The held-out sets, where evaluated: test (after every epoch, or once at the end
            # with a validation split) and validation.
            for key, what, style in (("test", "test", "s--"), ("val", "validation", "^:")):
                evaluated = [e for e in epochs if e.get(f"{key}_accuracy") is not None]
                if not evaluated:
                    continue
                xs = [x_of(e) for e in evaluated]
                if all(e.get(f"{key}_loss") is not None for e in evaluated):
                    loss.plot(xs, [e[f"{key}_loss"] for e in evaluated], style, color=colour, markersize=4,
                              label=f"{name} {what}")
                accuracy.plot(xs, [100 * e[f"{key}_accuracy"] for e in evaluated], style, color=colour, markersize=4,
                              label=f"{name} {what}")

    for col, xlabel in enumerate(("step", "epoch")):
        axes[0][col].set_ylabel("loss")
        axes[1][col].set_ylabel("accuracy (%)")
        for row in (0, 1):
            axes[row][col].set_xlabel(xlabel)
            axes[row][col].grid(True, alpha=0.3)
    if not any(epochs for _, _, epochs in runs):
        for col in (0, 1):
            axes[1][col].text(0.5, 0.5, "no epoch record yet", ha="center", va="center",
                              transform=axes[1][col].transAxes, color="gray")
    for ax in (axes[0][1], axes[1][1]):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="best")
    fig.suptitle(args.title or "kiln: " + ", ".join(name for name, _, _ in runs))
    fig.tight_layout()
    fig.savefig(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
