"""Fault injection: each corruption of a shard set on disk, on every backend, ends in one clear line naming the
file (and key): never wrong data, never a crash. The loaders run in a process of their own (``fault_runner.py``)
so that a segmentation fault fails the test instead of killing pytest."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import HAVE_DALI, make_dataset

from fastfashion.data.shard import ShardConfig, write_shards
from fastfashion.loading.base import LoaderError
from fastfashion.loading.loader import make_loader

HERE = Path(__file__).resolve().parent
INTEGRITY = r"IntegrityError: {d}/val-00001\.{ext}: sha256 differs from the manifest \(corrupted or modified\)"
JPEG = r"LoaderError: {d}/val-00001\.tar: sample '00012': the \.jpg member "
BOMB = JPEG + (r"claims 20000x20000 = 400,000,000 pixels, over the limit of 89,478,485 \(max_image_pixels; a "
               r"decompression bomb or a huge image\)")
EXPECTED = {  # scenario -> the one line (regex; {d}: the scenario's shard folder) or None (reads fine, 3 batches)
    "intact": None,
    "flipped_jpeg_byte": INTEGRITY.replace("{ext}", "tar"),
    "flipped_lbl_byte": INTEGRITY.replace("{ext}", "tar"),
    "zeroed_jpeg_start": INTEGRITY.replace("{ext}", "tar"),
    "zeroed_jpeg_start_unverified": r"LoaderError: {d}/val-00001\.tar: sample '00012': the \.jpg member is not JPEG "
                                    r"data \(starts with 00d8ff\)",
    "truncated_tar": r"ManifestError: {d}/val-00001\.tar: missing or not \d+ bytes as the manifest records",
    "deleted_idx": r"ManifestError: {d}/val-00001\.idx: listed in the manifest but missing",
    "garbage_idx": INTEGRITY.replace("{ext}", "idx"),
    "garbage_idx_unverified": r"LoaderError: {d}/val-00001\.idx:1: expected 'v1\.2 <num_samples>', got 'hello world'",
    "binary_idx_unverified": r"LoaderError: {d}/val-00001\.idx:\d+: not an index line \(binary data\)",
    "idx_of_another_shard": INTEGRITY.replace("{ext}", "idx"),
    "idx_of_another_shard_unverified": r"LoaderError: {d}/val-00001\.tar: shard is truncated: sample '\d+' ends at "
                                       r"byte \d+, the file has \d+",
    "swapped_tars_same_size": INTEGRITY.replace("{ext}", "tar"),
    "label_out_of_range_rehashed": r"LoaderError: {d}/val-00001\.tar: sample '00012': label 133 out of range for "
                                   r"pattern \(0\.\.6\)",
    "label_out_of_range_unverified": r"LoaderError: {d}/val-00001\.tar: sample '00012': label 133 out of range for "
                                     r"pattern \(0\.\.6\)",
    # hostile JPEGs (issue 23, case 1): refused by the header check when the split is opened, before any decoder
    # sees them, with the same line on every backend (DALI would decode each into a grey or garbage image)
    "bomb_header_indexed": BOMB,
    "bomb_header_rehashed": BOMB,
    "truncated_scan_rehashed": JPEG + r"is truncated: no end-of-image marker after its scan \(a scan cut short, or "
                                      r"garbage in it\)",
    "garbage_after_header_rehashed": JPEG + r"is not a valid JPEG: expected a marker at byte 177, found 0db4",
    "garbage_scan_rehashed": JPEG + r"is corrupt: marker ffa6 inside its scan data at byte \d+",
    # found only by the decoder (a valid structure): the same line on both backends, after the batches before it
    "undefined_tables_rehashed": r"LoaderError: {d}/val-00001\.tar: sample '00012': broken data stream when reading "
                                 r"image file",
    "manifest_tar_escapes_folder": r"ManifestError: {d}/manifest\.json: split 'val' shard 1: tar "
                                   r"'\.\./shards-outside/x\.tar' is not a plain \*\.tar file name inside the shard "
                                   r"folder",
    "manifest_absolute_tar": r"ManifestError: {d}/manifest\.json: split 'val' shard 1: tar '/\S+/val-00001\.tar' is "
                             r"not a plain \*\.tar file name inside the shard folder",
    "manifest_num_samples_not_integer": r"ManifestError: {d}/manifest\.json: split 'val' shard 0: num_samples '5' is "
                                        r"not a non-negative integer",
    "manifest_num_samples_huge": r"LoaderError: {d}/val-00000\.idx: 4 samples, manifest says 1000000000000",
    "manifest_bad_sha": r"ManifestError: {d}/manifest\.json: split 'val' shard 0: sha256 'xyz' is not a hex sha256",
    "manifest_not_json": r"ManifestError: {d}/manifest\.json: unreadable manifest: 'utf-8' codec can't decode byte "
                         r"0x89 in position 0: invalid start byte",
    # issue 23, cases 3-7 (bounds and networks; README, "Reliability")
    "batch_size_100000": None,  # lowered to the split: 1 batch
    "workers_1000000": None,
    "manifest_over_the_size_limit": r"ManifestError: {d}/manifest\.json: more than the 268435456 bytes a manifest may "
                                    r"have",
    "served_through_chaos": None,
    "served_tar_longer_than_the_manifest_says": r"RemoteError: http://127\.0\.0\.1:\d+/shards/val-00001\.tar: "
                                                r"shard file val-00001\.tar: more than the \d+ bytes the manifest "
                                                r"records",
}
BATCHES = {"batch_size_100000": 1}  # scenarios that read fine: batches delivered (3 unless named here)
DECODED_BEFORE = {"undefined_tables_rehashed": 1}  # batches delivered before a decode-time error: those before it
BACKENDS = [pytest.param("dali-cpu", marks=pytest.mark.skipif(not HAVE_DALI, reason="DALI is not installed")),
            "torch"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A fresh set: 12 val samples in 3 shards of 4 (each scenario corrupts a copy)."""
    root = tmp_path_factory.mktemp("faults")
    data = make_dataset(root / "data", train=8, val=12, test=4)
    write_shards(data, root / "base", ShardConfig(workers=1, samples_per_shard=4))
    return root / "base"


@pytest.fixture(scope="module", params=BACKENDS)
def outcomes(request, base, tmp_path_factory):
    """Every scenario on one backend, in one subprocess: ``(work dir, {scenario: result})``."""
    work = tmp_path_factory.mktemp(f"work-{request.param}")
    proc = subprocess.run([sys.executable, str(HERE / "fault_runner.py"), str(base), str(work), request.param],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    started = [ln["start"] for ln in lines if "start" in ln]
    if proc.returncode != 0:  # a signal (segmentation fault) or an error outside the scenarios
        pytest.fail(f"{request.param}: the loader process ended with {proc.returncode} during scenario "
                    f"{started[-1] if started else '?'}: {proc.stderr.strip().splitlines()[-1:]}")
    return work, {ln["scenario"]: ln for ln in lines if "scenario" in ln}


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_each_corruption_ends_in_one_line(outcomes, scenario):
    work, results = outcomes
    got = results[scenario]
    expected = EXPECTED[scenario]
    if expected is None:
        assert got == {"scenario": scenario, "error": None, "batches": BATCHES.get(scenario, 3)}
        return
    d = re.escape(str(work / scenario / "shards"))
    assert got["batches"] == DECODED_BEFORE.get(scenario, 0)  # refused before any data was delivered (or the bad one)
    assert re.fullmatch(expected.replace("{d}", d), got["error"]), got["error"]


def test_every_scenario_was_run(outcomes):
    assert sorted(outcomes[1]) == sorted(EXPECTED)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_iterator_supersedes_the_first(base, backend):
    loader = make_loader(base, "val", batch_size=4, backend=backend, device="cpu", image_size=16, workers=0,
                         with_keys=True)
    a = iter(loader)
    first = next(a)
    b = iter(loader)  # a val pass starts over (evaluation passes are not resumed mid-way)
    assert [k for batch in b for k in batch.keys] == loader.keys(0)  # the new pass is whole and in order
    with pytest.raises(LoaderError, match=r"this iterator was superseded by a newer iter\(\) on the same loader"):
        next(a)
    assert first.keys == loader.keys(0)[:4]
    loader.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_replaced_shard_set_is_noticed(base, tmp_path, backend):
    import shutil
    d = tmp_path / "shards"
    shutil.copytree(base, d)
    loader = make_loader(d, "val", batch_size=4, backend=backend, device="cpu", image_size=16, workers=0)
    assert sum(1 for _ in loader) == 3
    manifest = (d / "manifest.json").read_text()
    (d / "manifest.json").unlink()  # what `fastfashion shard --overwrite` does: a new manifest (another inode)
    (d / "manifest.json").write_text(manifest)
    with pytest.raises(LoaderError, match=f"^{re.escape(str(d))}: the shard set was replaced or changed since this "
                                          r"loader was made \(manifest\.json differs\); make a new loader$"):
        next(iter(loader))
    loader.close()


def test_threads_get_whole_batches_or_a_clear_error(base):
    """Two threads, one loader: each next() holds the loader's lock, so a batch is never mixed; the thread whose
    pass was superseded gets the LoaderError, not wrong data."""
    import threading
    loader = make_loader(base, "val", batch_size=4, backend="torch", device="cpu", image_size=16, workers=0,
                         with_keys=True)
    results: dict[str, object] = {}

    def read(name):
        try:
            results[name] = [k for batch in loader for k in batch.keys]
        except LoaderError as e:
            results[name] = e

    threads = [threading.Thread(target=read, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    whole = [v for v in results.values() if isinstance(v, list)]
    assert whole and all(v in (loader.keys(0), loader.keys(1)) for v in whole)
    assert all(isinstance(v, LoaderError) and "superseded" in str(v) for v in results.values() if v not in whole)


def _cli(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fastfashion", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TQDM_DISABLE": "1"}, **kw)


def test_corrupt_set_through_the_cli_is_one_line(base, tmp_path):
    import shutil
    d = tmp_path / "shards"
    shutil.copytree(base, d)
    with open(d / "val-00001.tar", "r+b") as f:
        f.seek(600)
        f.write(b"\x00")
    out, err = _cli("train", "--shards", str(d), "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size",
                    "4", "--image-size", "16").communicate(timeout=120)
    assert err.strip().splitlines()[-1] == (f"fastfashion train: error: {d}/val-00001.tar: sha256 differs from the "
                                            "manifest (corrupted or modified)")
    assert "Traceback" not in err


def _pid_dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigterm_during_train_is_one_line_and_143(base, tmp_path):
    proc = _cli("train", "--shards", str(base), "--out", str(tmp_path / "run"), "--epochs", "50", "--batch-size",
                "4", "--image-size", "16")
    deadline = time.monotonic() + 90
    while not (tmp_path / "run" / "metrics.json").exists():  # mid-run: after the first epoch's files
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert re.fullmatch(r"fastfashion train: stopped by SIGTERM after step \d+; checkpoint \S+/last\.pt written; run "
                        r"the same command with --resume to continue", err.strip().splitlines()[-1])
    assert "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == []
    assert not [p for p in Path("/dev/shm").glob(f"fastfashion-dali-{proc.pid}-*")]


def test_leftovers_of_killed_runs_are_removed_by_the_next_command(base, tmp_path):
    """SIGKILL leaves what a process was writing; the next command of any kind removes it, and only what belongs
    to processes that are gone."""
    script = (f"from fastfashion.loading.loader import make_loader\n"
              f"loader = make_loader({str(base)!r}, 'val', batch_size=4, image_size=16, workers=0)\n"
              f"next(iter(loader)); print('ready', flush=True)\nimport time; time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.stdout.readline().strip() == "ready"
    from fastfashion.fsutil import owner_record
    record = owner_record(proc.pid)  # named by host, boot, PID and start time
    recorded = record.read_text().splitlines()
    assert recorded and all(Path(p).exists() for p in recorded)  # its temporaries, recorded under its PID
    proc.kill()
    proc.wait()
    assert _pid_dead(proc.pid)
    r = _cli("inspect", str(base), "--plots", str(tmp_path / "plots"))
    r.communicate(timeout=120)
    assert r.returncode == 0
    assert [p for p in recorded if Path(p).exists()] == []
    assert not record.exists()


def test_sigterm_during_shard_is_one_line_and_143(tmp_path):
    """The command line, mid-way through writing tars in two worker processes (slowed down here): one line, 143, no
    worker traceback, no set; the shards it committed are kept for the same command run again, which reuses them."""
    from helpers import slow_tasks_env
    data = make_dataset(tmp_path / "data", train=12, val=4, test=4)
    out = tmp_path / "out"
    flag = tmp_path / "ctl" / "slow"
    flag.parent.mkdir()
    flag.touch()
    args = [sys.executable, "-m", "fastfashion", "shard", str(data), str(out), "--workers", "2",
            "--samples-per-shard", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=slow_tasks_env(flag, 0.2))
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.partial/_fragments/train-0000*.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    lines = [ln for ln in err.splitlines() if not ln.startswith("INFO")]
    assert lines[-1] == "fastfashion shard: terminated (SIGTERM); temporary files removed"  # no worker tracebacks
    assert len(lines) == 2 and re.fullmatch(r"WARNING fastfashion\.data\.output: kept \d+ committed shards in "
                                            r".*\.out\.partial: the same command run again reuses them.*", lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial", "ctl", "data"]
    assert not list(tmp_path.glob(".out.partial/.attempt-*"))  # the scratch of the shards in flight is gone
    flag.unlink()
    r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}, timeout=120)
    assert r.returncode == 0 and re.search(r"reused [1-9]\d* of 10 shards", r.stderr), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctl", "data", "out"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_shard_changed_after_the_loader_was_made_is_refused(base, tmp_path, backend):
    """Backends open the shards again by path (a DALI pipeline rebuild, torch workers): a file replaced after the
    loader verified it is refused at the next pass, even with its size and mtime kept."""
    import shutil
    d = tmp_path / "shards"
    shutil.copytree(base, d)
    loader = make_loader(d, "val", batch_size=4, backend=backend, device="cpu", image_size=16, workers=0)
    assert sum(1 for _ in loader) == 3
    st = os.stat(d / "val-00000.tar")
    data = bytearray((d / "val-00000.tar").read_bytes())
    data[-2000] ^= 0xFF
    (d / "new.tar").write_bytes(bytes(data))
    os.utime(d / "new.tar", ns=(st.st_atime_ns, st.st_mtime_ns))  # cp -p style: same size, same mtime
    os.replace(d / "new.tar", d / "val-00000.tar")
    with pytest.raises(LoaderError, match=f"^{re.escape(str(d / 'val-00000.tar'))}: changed since this loader "
                                          "verified it; make a new loader$"):
        next(iter(loader))
    loader.close()


def test_owner_records_of_live_or_foreign_processes_are_kept(tmp_path):
    """Only a record of this machine whose process is gone (or whose PID now belongs to a process started at
    another time) is cleaned; another host's record, possibly on a shared cache folder, is left alone."""
    from fastfashion.fsutil import _owner_gone, owner_record
    me = owner_record().name
    host, boot, pid, start = me.split("_")
    assert not _owner_gone(me)  # this process
    assert _owner_gone(f"{host}_{boot}_{pid}_{int(start) + 1}")  # the same PID, another start: a reused PID
    assert _owner_gone(f"{host}_otherboo_{pid}_{start}")  # an earlier boot of this machine
    assert not _owner_gone(f"another-host_{boot}_1_1")  # someone else's machine


def test_cache_home_follows_xdg_cache_home_and_holds_the_owner_records(tmp_path, monkeypatch):
    from fastfashion.fsutil import cache_home, owner_record
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_home() == tmp_path / "xdg" / "fastfashion"
    assert owner_record().parent == tmp_path / "xdg" / "fastfashion" / "owners"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_home() == tmp_path / "home" / ".cache" / "fastfashion"


def test_one_iterator_read_by_two_threads_or_after_close(base):
    import threading
    loader = make_loader(base, "val", batch_size=4, backend="torch", device="cpu", image_size=16, workers=0)
    it = iter(loader)
    errors: list[Exception] = []
    hold = threading.Event()
    release = threading.Event()

    def slow_next(batches, generation, _real=loader._next_batch):
        hold.set()
        release.wait(5)
        return _real(batches, generation)

    loader._next_batch = slow_next  # make the first next() stay inside the iterator for a while
    t = threading.Thread(target=lambda: next(it))
    t.start()
    hold.wait(5)
    try:
        next(it)
    except LoaderError as e:
        errors.append(e)
    release.set()
    t.join()
    assert [str(e) for e in errors] == ["this iterator is being read by another thread; give each thread its own "
                                        "iter() (or its own loader)"]
    loader.close()
    with pytest.raises(LoaderError, match=r"this iterator was superseded by a newer iter\(\) on the same loader or by "
                                          r"close\(\)"):
        next(it)
