"""The fault suite's hostile-input cases (issue 23: cases 1, 2, 8-11), beside :mod:`test_faults`, whose corpus
(``fault_runner.py``) holds the hostile JPEGs read by every backend: here the same JPEGs at ``index`` and ``shard``
time, the peak memory of refusing a decompression bomb, run folders that never mix runs, and the small one-line
errors (an empty tar, a checkpoint that is a directory, a torch loader in an unguarded script after DALI)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import HAVE_DALI, make_dataset

from fastfashion.cli import main as cli_main
from fastfashion.data.adopt import AdoptError, IndexConfig, index_shards
from fastfashion.data.shard import ShardConfig, write_shards
from fastfashion.data.validate import check_jpeg
from fastfashion.format.jpeg import MAX_IMAGE_PIXELS, jpeg_problem
from fastfashion.train import checkpoint as ckpt_io
from fastfashion.train.checkpoint import CheckpointError
from fastfashion.train.inference import evaluate_checkpoint
from fastfashion.train.trainer import TrainConfig, TrainError, train

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import fault_runner  # noqa: E402  (the corpus's JPEG edits)

BACKENDS = [pytest.param("dali-cpu", marks=pytest.mark.skipif(not HAVE_DALI, reason="DALI is not installed")),
            "torch"]
TINY = dict(epochs=1, batch_size=8, image_size=32, lr=1e-3, seed=7, backend="torch", workers=0)
# Peak RSS of a process that opens a loader on a set holding a 20000x20000 bomb header: refused before any pixel
# buffer, so it stays within this much of the same process reading the intact set (DALI 2.4's CPU decoder, had it
# seen the header, would have allocated 1.2 GB per copy of the frame: 4.6 GB RSS measured)
BOMB_RSS_MARGIN_MB = 64


def _jpeg() -> bytes:
    import io

    import numpy as np
    from PIL import Image
    b = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 48, 3)) * 255).astype(np.uint8)).save(b, "JPEG")
    return b.getvalue()


HOSTILE = {  # name -> (edit of a valid JPEG, same size, the reason's start)
    "bomb": (fault_runner._bomb, "claims 20000x20000 = 400,000,000 pixels, over the limit of 89,478,485"),
    "truncated scan": (lambda b: b[:len(b) // 2] + bytes(len(b) - len(b) // 2),
                       "is truncated: no end-of-image marker after its scan"),
    "garbage after the header": (lambda b: b[:fault_runner._jpeg_segment(b, {0xC0})[1]] + bytes(
        (i * 167 + 13) % 251 for i in range(len(b) - fault_runner._jpeg_segment(b, {0xC0})[1])),
        "is not a valid JPEG: expected a marker"),
    "garbage in the scan": (lambda b: b[:fault_runner._jpeg_segment(b, {0xDA})[1]] + bytes(
        (i * 167 + 13) % 256 for i in range(len(b) - fault_runner._jpeg_segment(b, {0xDA})[1] - 2)) + b"\xff\xd9",
        "is corrupt: marker ff"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_the_header_check_refuses_each_hostile_jpeg_and_shard_time_too(name):
    edit, reason = HOSTILE[name]
    good = _jpeg()
    assert jpeg_problem(good) is None and check_jpeg(good) is None
    bad = edit(good)
    assert len(bad) == len(good)
    assert jpeg_problem(bad).startswith(reason)
    assert check_jpeg(bad) == f"JPEG {jpeg_problem(bad)}"  # shard's validation: refused before PIL decodes


def test_a_thumbnail_in_the_headers_does_not_hide_a_truncated_scan_and_trailers_pass():
    """An EXIF thumbnail is a whole JPEG (scan and end-of-image marker) inside an APP1 segment: the scan walk starts
    at the main image's first scan, not at the first FF DA bytes."""
    good = _jpeg()
    seg = b"Exif\x00\x00" + good
    with_thumb = good[:2] + b"\xff\xe1" + (len(seg) + 2).to_bytes(2, "big") + seg + good[2:]
    assert jpeg_problem(with_thumb) is None
    assert jpeg_problem(with_thumb[:-len(good) // 2]).startswith("is truncated: no end-of-image marker")
    assert jpeg_problem(good + b"SEFH" + bytes(500)) is None  # bytes after the end-of-image marker: ignored


def test_the_pixel_limit_is_a_parameter():
    bomb = fault_runner._bomb(_jpeg())
    assert jpeg_problem(bomb, max_pixels=400_000_000) is None  # exactly at the limit: accepted
    assert "over the limit of 399,999,999" in jpeg_problem(bomb, max_pixels=400_000_000 - 1)
    assert MAX_IMAGE_PIXELS == 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS, as documented


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """12 val samples in 3 shards of 4 (the scenarios edit copies)."""
    root = tmp_path_factory.mktemp("hostile")
    write_shards(make_dataset(root / "data", train=8, val=12, test=4), root / "base",
                 ShardConfig(workers=1, samples_per_shard=4))
    return root / "base"


def _tars_only(base: Path, d: Path) -> Path:
    """The base set's tars alone: a WebDataset written by another tool, to adopt with ``fastfashion index``."""
    d.mkdir()
    for t in base.glob("*.tar"):
        shutil.copy(t, d / t.name)
    return d


def _cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastfashion", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TQDM_DISABLE": "1"})


@pytest.mark.parametrize("name", list(HOSTILE))
def test_index_without_check_images_refuses_each_hostile_jpeg(base, tmp_path, name):
    d = _tars_only(base, tmp_path / "set")
    fault_runner._hostile_jpeg(d, HOSTILE[name][0])
    r = _cli("index", str(d))
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1 and lines[0].startswith(
        f"fastfashion index: error: {d}/val-00001.tar: sample '00012': .jpg member: JPEG {HOSTILE[name][1]}"), lines
    assert sorted(p.name for p in d.iterdir()) == sorted(p.name for p in base.glob("*.tar"))  # nothing written


def test_index_takes_a_pixel_limit(base, tmp_path):
    d = _tars_only(base, tmp_path / "set")
    fault_runner._hostile_jpeg(d, fault_runner._bomb)
    with pytest.raises(AdoptError, match="over the limit of 89,478,485"):
        index_shards(d)
    assert index_shards(d, IndexConfig(max_image_pixels=400_000_000))["source"]["num_listed"] == 24


_PEAK = """import json, resource, sys
from fastfashion import make_loader
d, backend = sys.argv[1], sys.argv[2]
try:
    loader = make_loader(d, "val", batch_size=4, backend=backend, device="cpu", image_size=16, workers=0)
    out = {"batches": sum(1 for _ in loader)}
except Exception as e:
    out = {"error": f"{type(e).__name__}: {e}"}
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bomb_is_refused_before_any_large_allocation(base, tmp_path, backend):
    """Peak RSS of the process that meets the bomb, against the same process reading the intact set."""
    bomb = _tars_only(base, tmp_path / "bomb")
    fault_runner._hostile_jpeg(bomb, fault_runner._bomb)
    index_shards(bomb, IndexConfig(max_image_pixels=10 ** 9))  # the set lets it in; the loader's limit must hold
    runs = {}
    for name, d in (("intact", base), ("bomb", bomb)):
        r = subprocess.run([sys.executable, "-c", _PEAK, str(d), backend], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
        assert r.returncode == 0, r.stderr[-2000:]
        runs[name] = json.loads(r.stdout.strip().splitlines()[-1])
    assert runs["intact"]["batches"] == 3
    assert runs["bomb"]["error"].startswith(f"LoaderError: {bomb}/val-00001.tar: sample '00012': the .jpg member "
                                            "claims 20000x20000")
    assert runs["bomb"]["peak_mb"] < runs["intact"]["peak_mb"] + BOMB_RSS_MARGIN_MB, runs


# --- case 8: an empty tar ------------------------------------------------------------------------------------------

def test_index_names_an_empty_or_unreadable_tar(tmp_path):
    d = tmp_path / "set"
    d.mkdir()
    (d / "train-0.tar").write_bytes(b"")
    r = _cli("index", str(d))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == \
        f"fastfashion index: error: {d}/train-0.tar: not a readable tar archive (empty file)"
    (d / "train-0.tar").write_bytes(bytes(10240))  # no members: what `tar cf x.tar -T /dev/null` writes
    with pytest.raises(AdoptError, match=f"^{re.escape(str(d))}/train-0.tar: an empty tar \\(no samples\\)"):
        index_shards(d)


# --- case 2 (point 4), case 9, case 10: run folders ----------------------------------------------------------------

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = root / "shards"
    write_shards(make_dataset(root / "data", train=40, val=16, test=8), out, ShardConfig(samples_per_shard=16,
                                                                                         workers=1))
    return out


@pytest.fixture(scope="module")
def run_a(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("a") / "run"
    train(TrainConfig(shard_dir=str(shards), out=str(out), **TINY))
    return out


def _run_id(path: Path) -> str:
    return ckpt_io.load_checkpoint(path)["run_id"]


def test_overwrite_clears_the_old_runs_files_before_the_new_run_writes(run_a, shards, tmp_path):
    """`train --overwrite` killed right after it started: none of the old run's files is left to be mistaken for
    the new run's (before, its best.pt stayed and evaluate used it)."""
    out = tmp_path / "run"
    shutil.copytree(run_a, out)
    old = _run_id(out / "last.pt")
    proc = subprocess.Popen([sys.executable, "-m", "fastfashion", "train", "--shards", str(shards), "--out", str(out),
                             "--overwrite", "--epochs", "50", "--batch-size", "8", "--image-size", "32",
                             "--backend", "torch", "--workers", "0"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        assert time.monotonic() < deadline
        if "removed the previous run's" in line:
            break
    proc.kill()  # as early as possible after the start: no checkpoint of the new run yet
    proc.communicate(timeout=60)
    assert re.search(r"removed the previous run's last\.pt, best\.pt, metrics\.json, curves\.png \(overwrite\); "
                     r"this is run [0-9a-f]{12}$", line.strip()), line
    left = {p.name for p in out.iterdir()}
    assert not left & set(ckpt_io.RUN_FILES) or all(_run_id(out / n) != old for n in left & {"last.pt", "best.pt"})
    assert "best.pt" not in left and "metrics.json" not in left


def test_a_folder_that_holds_only_a_best_pt_or_metrics_is_a_run_too(run_a, shards, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(run_a / "best.pt", out / "best.pt")
    with pytest.raises(TrainError, match=r"already holds a run \(best\.pt\); refusing to overwrite it"):
        train(TrainConfig(shard_dir=str(shards), out=str(out), **TINY))
    assert (out / "best.pt").exists()


def test_evaluate_names_the_run_and_refuses_a_best_pt_of_another_run(run_a, shards, tmp_path, capsys, caplog):
    a, b = _run_id(run_a / "last.pt"), ckpt_io.new_run_id()
    assert a != b
    with caplog.at_level("INFO", logger="fastfashion.train.inference"):
        assert cli_main(["evaluate", "--shards", str(shards), "--checkpoint", str(run_a / "best.pt"), "--backend",
                         "torch", "--device", "cpu"]) == 0
    assert f"checkpoint {run_a / 'best.pt'} (run {a})" in capsys.readouterr().out
    assert f"checkpoint {run_a / 'best.pt'}: run {a}, epoch 1, step 5" in caplog.messages  # predict logs it too
    mixed = tmp_path / "mixed"
    shutil.copytree(run_a, mixed)
    ckpt = torch.load(run_a / "best.pt", map_location="cpu", weights_only=True)
    ckpt_io.save_atomic({**ckpt, "run_id": b}, mixed / "best.pt")  # another run's: what --overwrite left before
    for verb in ("evaluate", "predict"):
        extra = ["--out", str(tmp_path / "p.txt")] if verb == "predict" else []
        assert cli_main([verb, "--shards", str(shards), "--checkpoint", str(mixed / "best.pt"), "--backend", "torch",
                         "--device", "cpu", *extra]) == 1
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"fastfashion {verb}: error: {mixed / 'best.pt'} belongs to run {b}, {mixed / 'last.pt'} to run {a}: "
            f"the folder mixes two runs; evaluate {mixed / 'last.pt'}, or train again into a new folder")
    assert not (tmp_path / "p.txt").exists()


def test_a_checkpoint_without_a_run_id_still_loads_with_one_warning(run_a, shards, tmp_path, caplog):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run_a / name, map_location="cpu", weights_only=True)
        del ckpt["run_id"]  # as written before run ids
        ckpt_io.save_atomic(ckpt, old / name)
    with caplog.at_level("WARNING", logger="fastfashion.train.checkpoint"):
        first = evaluate_checkpoint(old / "best.pt", shards, backend="torch", device="cpu")
        ckpt_io.load_checkpoint(old / "best.pt")  # a second load: no second warning
    assert first["run_id"] is None and first["num_samples"] == 16
    warnings = [r.getMessage() for r in caplog.records if "no run id" in r.getMessage()]
    assert warnings == [f"{old / 'best.pt'} has no run id (written before fastfashion recorded one): whether it "
                        "belongs to the same run as the other files of its folder cannot be checked"]


def test_resume_keeps_the_run_id(run_a, shards, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_a, out)
    a = _run_id(out / "last.pt")
    train(TrainConfig(shard_dir=str(shards), out=str(out), resume=True, max_steps=6, **{**TINY, "epochs": 2}))
    history = json.loads((out / "metrics.json").read_text())
    assert [r["run_id"] for r in history] == [a, a] and _run_id(out / "last.pt") == a


def test_checkpoint_given_a_directory_says_so(run_a, shards, tmp_path, capsys):
    assert cli_main(["evaluate", "--shards", str(shards), "--checkpoint", str(run_a)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"fastfashion evaluate: error: checkpoint {run_a} is a directory, not a checkpoint file; did you mean " \
        f"{run_a / 'best.pt'}?"
    with pytest.raises(CheckpointError, match=r"is a directory, not a checkpoint file \(give the path of a \.pt"):
        ckpt_io.load_checkpoint(tmp_path)


def test_a_failed_run_removes_the_empty_folder_it_created(shards, tmp_path):
    out = tmp_path / "new" / "deeper" / "run"
    with pytest.raises(TrainError, match="make no full batch of 64"):
        train(TrainConfig(shard_dir=str(shards), out=str(out), **{**TINY, "batch_size": 64}))
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()  # the user's folder: a failed run leaves it, empty or not
    with pytest.raises(TrainError):
        train(TrainConfig(shard_dir=str(shards), out=str(kept), **{**TINY, "batch_size": 64}))
    assert kept.is_dir()


# --- case 11: DALI, then torch workers, in a script without a main guard ------------------------------------------

_SCRIPT = """from fastfashion import make_loader
SHARDS = {shards!r}
a = make_loader(SHARDS, "val", batch_size=4, backend="dali-cpu", device="cpu", image_size=16)
print("dali", sum(1 for _ in a))
b = make_loader(SHARDS, "val", batch_size=4, backend="torch", device="cpu", image_size=16, workers={workers})
print("torch", sum(1 for _ in b))
"""


def _python(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """``python ARGS`` as a user runs it (no progress bars)."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "TQDM_DISABLE": "1"})


@pytest.mark.skipif(not HAVE_DALI, reason="DALI is not installed")
def test_torch_workers_after_dali_in_an_unguarded_script_say_what_to_do(base, tmp_path):
    script = tmp_path / "quick.py"
    script.write_text(_SCRIPT.format(shards=str(base), workers=2))
    r = _python(str(script))
    assert r.returncode == 1 and r.stdout == "dali 3\n"
    assert "exited unexpectedly" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"fastfashion.loading.base.LoaderError: {script}:6: the torch backend's 2 worker processes start by "
        "forkserver once DALI is loaded in this process, and each runs this script's top-level code again; put "
        "that code under 'if __name__ == \"__main__\":', or pass workers=0")


@pytest.mark.skipif(not HAVE_DALI, reason="DALI is not installed")
def test_a_packages_main_run_with_dash_m_is_not_refused(base, tmp_path):
    """``python -m pkg`` runs ``pkg/__main__.py``, whose top-level code multiprocessing does not run again in a
    worker (as ``python -m fastfashion bench`` with dali-cpu then torch workers): not refused."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "__main__.py").write_text(_SCRIPT.format(shards=str(base), workers=1))
    r = _python("-m", "pkg", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "dali 3\ntorch 3\n", r.stderr[-2000:]


@pytest.mark.long
@pytest.mark.skipif(not HAVE_DALI, reason="DALI is not installed")
def test_both_ways_out_of_the_unguarded_script_work(base, tmp_path):
    """What the error advises: workers=0, or the main guard (with torch workers by forkserver after DALI)."""
    script = tmp_path / "quick.py"
    script.write_text(_SCRIPT.format(shards=str(base), workers=0))
    r = _python(str(script))
    assert r.returncode == 0 and r.stdout == "dali 3\ntorch 3\n", r.stderr[-2000:]
    body = _SCRIPT.format(shards=str(base), workers=2).splitlines()
    script.write_text("\n".join([body[0], "def main():", *("    " + ln for ln in body[1:]),
                                 "if __name__ == \"__main__\":", "    main()", ""]))
    r = _python(str(script))
    assert r.returncode == 0 and r.stdout == "dali 3\ntorch 3\n", r.stderr[-2000:]



@pytest.mark.skipif(not HAVE_DALI, reason="DALI is not installed")
def test_a_dali_decode_error_is_the_torch_backends_line(base, tmp_path):
    """Should a JPEG the header check passes still fail in DALI's decoder, the DALI backend names shard and key in
    the torch backend's words for the same sample (here a truncated scan, read without the check)."""
    import types

    import numpy as np

    from fastfashion.format.reader import read_split_samples
    from fastfashion.loading.augment import AugmentConfig
    from fastfashion.loading.backends.dali import DaliBackend
    from fastfashion.loading.backends.torch import ShardDataset
    from fastfashion.loading.base import LoaderError
    from fastfashion.shardset import ShardSet
    d = tmp_path / "set"
    shutil.copytree(base, d)
    fault_runner._hostile_jpeg(d, HOSTILE["truncated scan"][0])
    with ShardSet.open(d, verify=False) as shards:
        samples = read_split_samples(d, shards.manifest, "val", shards.schema, tars=False)  # no header check
        i = next(k for k, r in enumerate(samples.refs) if r.key == "00012")
        with pytest.raises(LoaderError) as torch_error:
            ShardDataset(samples.refs, AugmentConfig(image_size=16, mode="eval"), shards.schema)[i]
        fake = types.SimpleNamespace(ctx=types.SimpleNamespace(samples=samples, schema=shards.schema))
        dali_error = DaliBackend._culprit(fake, np.array([i - 1, i]), RuntimeError("Critical error in pipeline:\nx"))
    assert str(dali_error) == str(torch_error.value)
    assert str(dali_error).startswith(f"{d}/val-00001.tar: sample '00012': image file is truncated")
