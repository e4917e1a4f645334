"""Time to accuracy: two (or more) training runs side by side, val average class accuracy against minutes.

    python benchmarks/time_to_accuracy.py fast=RUN_DIR seed=RUN_DIR --png curves.png --json results.json

Reads each run's ``metrics.json`` (written by ``fastfashion train``), prints at every epoch end of any run each run's
best accuracy so far, says whether the first run is ahead of every other at every such point, and writes the PNG
and a JSON with the rows of every run (what README "Time to accuracy" reports). Exit status 0 either way.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fastfashion.bench.plots import plot_time_to_accuracy, time_to_accuracy


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR", help="a run folder (or its metrics.json), named")
    p.add_argument("--png", metavar="FILE", help="write the figure")
    p.add_argument("--json", metavar="FILE", help="write every run's metrics rows and the side-by-side table")
    p.add_argument("--target", type=float, default=0.45, help="dashed line in the figure (default: %(default)s)")
    args = p.parse_args(argv)
    runs = {}
    for spec in args.runs:
        name, _, path = spec.partition("=")
        path = Path(path)
        runs[name] = json.loads((path / "metrics.json" if path.is_dir() else path).read_text())
    table = time_to_accuracy(runs)
    names = list(runs)
    print(f"{'minutes':>8} " + " ".join(f"{n:>8}" for n in names))
    for row in table:
        print(f"{row['minutes']:8.1f} " + " ".join(f"{'-' if row[n] is None else f'{row[n]:.3f}':>8}" for n in names))
    first, others = names[0], names[1:]
    ahead = all(row[first] is not None and all(row[o] is None or row[first] > row[o] for o in others)
                for row in table if row[first] is not None or any(row[o] is not None for o in others))
    print(f"{first} ahead of {', '.join(others)} at every epoch end: {ahead}")
    for name, h in runs.items():
        best = max(h, key=lambda r: r["val"]["avg_class_accuracy"])
        print(f"{name}: best {best['val']['avg_class_accuracy']:.4f} at epoch {best['epoch']} "
              f"({best['minutes']:.1f} min); {len(h)} epochs in {h[-1]['minutes']:.1f} min")
    if args.png:
        plot_time_to_accuracy(runs, args.png, target=args.target,
                              title="from scratch, 112 px, " + " vs ".join(names))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "table": table, "ahead": ahead}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
