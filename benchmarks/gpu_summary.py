"""The small Python steps of benchmarks/gpu_check.sh: what the machine has, whether DALI ran on the GPU, and the
summary table.

    python benchmarks/gpu_summary.py env --device cuda|cpu [--json FILE]
    python benchmarks/gpu_summary.py dali BENCH_JSON --backend dali-gpu
    python benchmarks/gpu_summary.py summary RESULTS_DIR --mode TEXT --failed "STEP ..."

``env`` fails when a package the check needs is missing, and with ``--device cuda`` when torch has no CUDA device or
DALI cannot run on the GPU (the reason names the builds' CUDA versions, the driver's, and the install command).
``dali`` fails unless the bench's row for that backend ran. ``summary`` prints a Markdown table to paste into the
README: every step's status and seconds, then the figures the steps measured (what each means: README, "GPU").
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

REQUIRED = ("nvidia.dali", "webdataset", "yaml", "tqdm")


def env(device: str, out: str | None) -> int:
    import importlib

    import torch

    from fastfashion.hardware import cuda_build_problem, driver_cuda_version
    facts = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
             "cuda_available": torch.cuda.is_available(), "driver_cuda": driver_cuda_version(),
             "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    problems = []
    for name in (*REQUIRED, "psutil", "matplotlib", "PIL", "pytest"):
        try:
            mod = importlib.import_module(name)
            facts[name] = getattr(mod, "__version__", "?")
        except Exception as e:  # noqa: BLE001 - any import failure is the finding
            facts[name] = None
            if name in REQUIRED:
                problems.append(f"{name} is not importable: {e}")
    if facts["nvidia.dali"]:
        from fastfashion.loading.backends.dali_check import gather_facts, gpu_problem
        f = gather_facts()
        facts.update(dali_cuda=f.dali_cuda, dali_devices=f.devices)
        dali_problem = gpu_problem(f)
        facts["dali_gpu_problem"] = dali_problem
        if device == "cuda" and dali_problem:
            problems.append(f"DALI cannot run on the GPU: {dali_problem}")
    if device == "cuda" and not facts["cuda_available"]:
        why = cuda_build_problem("torch", torch.version.cuda, facts["driver_cuda"])
        problems.append(f"torch sees no CUDA device{': ' + why if why else ''}")
    for k, v in facts.items():
        print(f"{k}: {v}")
    facts["problems"] = problems
    if out:
        Path(out).write_text(json.dumps(facts, indent=1) + "\n")
    for p in problems:
        print(f"gpu_check env: {p}", file=sys.stderr)
    return 1 if problems else 0


def dali(bench_json: str, backend: str) -> int:
    row = json.loads(Path(bench_json).read_text())["loaders"].get(backend)
    if row is None:
        print(f"gpu_check dali: the bench has no {backend} row", file=sys.stderr)
        return 1
    if row.get("status") != "ok" or row.get("backend") != backend:
        print(f"gpu_check dali: {backend} did not run: {row.get('reason', row.get('backend'))}", file=sys.stderr)
        return 1
    print(f"{backend} ran: {row['images_per_s']:.0f} img/s")
    return 0


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _last_json(path: Path):
    """The JSON object a command printed last in its log (``evaluate --json``)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start = text.rfind("\n{")
    start = 0 if text.startswith("{") and start < 0 else start + 1
    try:
        return json.loads(text[start:]) if start >= 0 else None
    except ValueError:
        return None


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _num(v, fmt: str = ".0f") -> str:
    return "-" if v is None else format(v, fmt)


def summary(results: Path, mode: str, failed: str) -> int:
    envf = _load(results / "env.json") or {}
    lines = [f"GPU check ({mode}): {envf.get('gpu') or 'no GPU'}; torch {envf.get('torch')} (CUDA "
             f"{envf.get('torch_cuda')}), DALI {envf.get('nvidia.dali')}, driver CUDA {envf.get('driver_cuda')}, "
             f"Python {envf.get('python')}", "", _row(["step", "status", "seconds", "limit s"]),
             _row(["---"] * 4)]
    steps = [ln.split("\t") for ln in (results / "steps.tsv").read_text().splitlines()[1:] if ln.strip()]
    lines += [_row(s) for s in steps]
    bench = _load(results / "bench.json")
    if bench:
        lines += ["", "Loaders (`fastfashion bench`, median of the rounds):", "",
                  _row(["backend", "img/s", "min-max", "x seed", "CPU s / 1k img", "peak RSS MB", "1st batch s"]),
                  _row(["---"] * 7)]
        for name, r in bench["loaders"].items():
            if r.get("status") != "ok":
                lines.append(_row([name, "skipped: " + str(r.get("reason")), "", "", "", "", ""]))
                continue
            lines.append(_row([name, _num(r["images_per_s"]), f"{r['images_per_s_min']:.0f}-"
                               f"{r['images_per_s_max']:.0f}", _num(r.get("ratio_to_baseline"), ".2f"),
                               _num(r["cpu_s_per_1000_images"], ".2f"), _num(r["peak_rss_mb"]),
                               _num(r["time_to_first_batch_s"], ".2f")]))
        sweep = bench.get("hw_decoder")
        if sweep and sweep.get("status") == "ok":
            lines += ["", f"hw_decoder_load sweep on {sweep['gpu']} (dali-gpu, cache off; best {sweep['best']}):",
                      "", _row(["hw_decoder_load", "img/s", "p50 ms/batch", "p99 ms/batch"]), _row(["---"] * 4)]
            lines += [_row([v["hw_decoder_load"], _num(v["images_per_s"]), _num(v["p50_ms"], ".2f"),
                            _num(v["p99_ms"], ".2f")]) for v in sweep["loads"].values()]
        elif sweep:
            lines += ["", f"hw_decoder_load sweep skipped: {sweep.get('reason')}"]
        train = bench.get("train") or {}
        if train:
            lines += ["", "End-to-end ResNet-18 training fed by each loader:", "",
                      _row(["feeder", "img/s", "share of ceiling", "host wait"]), _row(["---"] * 4)]
            for name, r in train.items():
                if "images_per_s" not in r:
                    lines.append(_row([name, "failed: " + str(r.get("reason")), "", ""]))
                    continue
                lines.append(_row([name, _num(r["images_per_s"], ".1f"),
                                   f"{100 * r.get('share_of_ceiling', 1.0):.1f} %",
                                   f"{100 * r.get('host_wait_share', 0.0):.1f} %"]))
    u8 = _load(results / "uint8.json")
    if u8:
        lines += ["", f"uint8 vs float delivery (benchmarks/uint8.py; batches moved to {u8['device']} and finished "
                  "there):", "", _row(["variant", "loader img/s", "x seed", "move + finish ms/batch",
                                       "end-to-end img/s", "MB per batch to the device"]), _row(["---"] * 6)]
        lines += [_row([name, _num(v["loader_images_per_s"]), _num(v.get("x_seed_loader"), ".2f"),
                        _num(v["finish_ms_per_batch"], ".1f"), _num(v["end_to_end_images_per_s"]),
                        _num(v["bytes_per_batch"] / 1e6, ".2f")]) for name, v in u8["variants"].items()]
    cache = _load(results / "gpu_cache.json")
    if cache:
        on, off = (cache[k]["images_per_s_after_first"] for k in ("cache on", "cache off"))
        dry = " (dry run: dali-cpu twice, no cache: the timing path only)" if cache.get("device") == "cpu" else ""
        lines += ["", f"Decoder cache, full epochs after the first: on {on:.0f} img/s, off {off:.0f} img/s "
                  f"({cache['speedup_after_first_epoch']:.2f}x){dry}"]
    runs = [("train + resume", "train_metrics.json"), ("ddp (2 ranks, gloo)", "ddp_metrics.json"),
            ("fast recipe", "fast_metrics.json")]
    rows = []
    for label, name in runs:
        hist = _load(results / name)
        if hist:
            last = hist[-1]
            rows.append(_row([label, last["epoch"], last["step"], _num(last["images_per_s"]),
                              _num(last["val"].get("avg_class_accuracy"), ".3f"), _num(last["minutes"], ".2f")]))
    if rows:
        lines += ["", "Trainer runs (last epoch):", "",
                  _row(["run", "epochs", "steps", "train img/s", "val avg class acc", "minutes"]), _row(["---"] * 6),
                  *rows]
    ev = _last_json(results / "evaluate.log")
    if ev:
        lines += ["", f"evaluate (train's last.pt, val): accuracy {ev.get('accuracy')}, avg class accuracy "
                  f"{ev.get('avg_class_accuracy')}"]
    failed = failed.split()
    lines += ["", f"FAILED steps: {', '.join(failed)}" if failed else "all steps passed"]
    print("\n".join(lines))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env")
    e.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    e.add_argument("--json")
    d = sub.add_parser("dali")
    d.add_argument("bench_json")
    d.add_argument("--backend", default="dali-gpu")
    s = sub.add_parser("summary")
    s.add_argument("results", type=Path)
    s.add_argument("--mode", default="GPU")
    s.add_argument("--failed", default="")
    a = ap.parse_args()
    if a.cmd == "env":
        return env(a.device, a.json)
    if a.cmd == "dali":
        return dali(a.bench_json, a.backend)
    return summary(a.results, a.mode, a.failed)


if __name__ == "__main__":
    sys.exit(main())
