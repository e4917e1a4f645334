"""Conversion throughput of `fastfashion shard`, engine by engine, side by side in one run.

    python benchmarks/convert.py SRC [--replicate K] [--rounds 3] [--workers N] [--json FILE]

Each round runs, in an order rotated per round, `fastfashion shard SRC OUT` as a user runs it (a new interpreter;
wall time includes start-up) with:

* ``serial``: ``--workers 1``, every task in the one process (validation and writing one image at a time);
* ``local``: ``--engine local --workers N``, a pool of N processes;
* ``ray``: ``--engine ray --workers N``, a local Ray started for the run and stopped after (its start-up included);
* ``ray-warm``: ``--engine ray --ray-address`` a local Ray of N CPUs started once before the rounds (a running
  cluster, as on a real one).

It reports the median wall time, images per second (listed images / median wall time) and the ratio to ``serial``
(median wall times divided: the ratio agrees with the img/s column), and checks that every engine's set is
byte-identical to ``serial``'s. ``--replicate K`` first builds a K-fold copy of SRC (a FashionDataset-layout folder)
in a temporary folder with hard links and renamed keys, e.g. the real set x 8 = 56,000 images.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = ("serial", "local", "ray", "ray-warm")


def replicate(src: Path, k: int, out: Path) -> Path:
    """A FashionDataset-layout copy of ``src`` with every sample ``k`` times (keys ``r{i}_{key}``, hard links)."""
    (out / "img").mkdir(parents=True)
    (out / "split").mkdir()
    for f in sorted((src / "split").iterdir()):
        if not f.name.endswith(".txt") or f.name.startswith("list_"):
            shutil.copy(f, out / "split" / f.name)
            continue
        lines = f.read_text().splitlines()
        is_list = not f.name.endswith("_attr.txt")
        rows = []
        for i in range(k):
            for line in lines:
                if is_list:
                    rel = Path(line.strip())
                    new = rel.with_name(f"r{i}_{rel.name}")
                    target = out / new
                    if not target.exists():
                        os.link(src / rel, target)
                    rows.append(new.as_posix())
                else:
                    rows.append(line)
        (out / "split" / f.name).write_text("\n".join(rows) + "\n")
    for f in (src / "split").iterdir():
        if f.name.startswith("list_") or f.suffix == ".json":
            shutil.copy(f, out / "split" / f.name)
    return out


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode() + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def run(engine: str, src: Path, out: Path, workers: int, address: str | None) -> tuple[float, float]:
    """Wall seconds and the driver's peak RSS (MiB) of one conversion."""
    args = [sys.executable, "-m", "fastfashion", "shard", str(src), str(out)]
    if engine == "serial":
        args += ["--workers", "1"]
    elif engine == "local":
        args += ["--engine", "local", "--workers", str(workers)]
    elif engine == "ray":
        args += ["--engine", "ray", "--workers", str(workers)]
    else:
        args += ["--engine", "ray", "--ray-address", address]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["TQDM_DISABLE"] = "1"
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # the driver's own peak RSS (its workers are not its children)
        proc.returncode = os.waitstatus_to_exitcode(status)
        dt = time.perf_counter() - t0
        if proc.returncode:
            err.seek(0)
            sys.exit(f"{engine}: fastfashion shard failed:\n{err.read().decode()[-2000:]}")
    return dt, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="a FashionDataset-layout folder")
    p.add_argument("--replicate", type=int, default=1, metavar="K", help="use a K-fold copy of SRC (default: 1)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default: %(default)s)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes / Ray CPUs (default: all)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of " + ",".join(ENGINES))
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e]
    tmp = Path(tempfile.mkdtemp(prefix="ff-convert-"))
    address = None
    try:
        src = replicate(args.src, args.replicate, tmp / "src") if args.replicate > 1 else args.src
        n = sum(len((src / "split" / f"{s}.txt").read_text().split()) for s in ("train", "val", "test"))
        if "ray-warm" in engines:
            import ray
            os.environ.pop("RAY_ADDRESS", None)
            ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="ERROR")
            address = ray.get_runtime_context().gcs_address
        times: dict[str, list[float]] = {e: [] for e in engines}
        rss: dict[str, float] = {}
        sets: dict[str, str] = {}
        run(engines[0], src, tmp / "warmup", args.workers, address)  # page cache and imports, not timed
        shutil.rmtree(tmp / "warmup")
        for r in range(args.rounds):
            for e in engines[r % len(engines):] + engines[:r % len(engines)]:
                out = tmp / f"{e}-{r}"
                dt, mib = run(e, src, out, args.workers, address)
                times[e].append(dt)
                rss[e] = max(rss.get(e, 0.0), mib)
                sets.setdefault(e, digest(out))
                shutil.rmtree(out)
        base = statistics.median(times[engines[0]])
        rows = []
        print(f"{n} images, {args.workers} workers, {args.rounds} rounds (median wall time, start-up included)")
        print("| engine | wall s | img/s | x " + engines[0] + " | driver peak RSS | same bytes |")
        print("|---|---|---|---|---|---|")
        for e in engines:
            med = statistics.median(times[e])
            same = sets[e] == sets[engines[0]]
            rows.append({"engine": e, "wall_s": times[e], "median_s": med, "img_per_s": n / med,
                         "ratio": base / med, "driver_rss_mib": rss[e], "identical": same})
            print(f"| {e} | {med:.1f} | {n / med:,.0f} | {base / med:.2f} | {rss[e]:.0f} MiB | "
                  f"{'yes' if same else 'NO'} |")
        if args.json:
            args.json.write_text(json.dumps({"images": n, "workers": args.workers, "rounds": args.rounds,
                                             "results": rows}, indent=1))
        return 0 if all(r["identical"] for r in rows) else 1
    finally:
        if address is not None:
            import ray
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
