"""Conversion engines: ``--engine local`` (a process pool) and ``--engine ray`` (a real local Ray, one per module)
give byte-identical sets, survive killed workers and a killed driver, and read and write object storage (moto's S3
server on 127.0.0.1).

Ray workers are slowed down, where a test needs a task in flight, by tests/slow_tasks (its ``sitecustomize`` is on
the PYTHONPATH Ray's workers inherit; it acts only while the module's flag file exists).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import REAL_DATA, make_dataset, slow_tasks_env

from fastfashion.data.shard import ShardConfig, write_shards
from fastfashion.errors import ConfigError

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_flag(tmp_path_factory):
    """A local Ray for the module (2 CPUs, a small object store, no dashboard, RAY_ADDRESS ignored); yields the
    flag file that slows its workers' shard writing down (0.3 s per image) while it exists."""
    flag = tmp_path_factory.mktemp("ray-ctl") / "slow"
    env = slow_tasks_env(flag, 0.3)
    keys = ("PYTHONPATH", "FASTFASHION_TEST_SLOW", "FASTFASHION_TEST_SLOW_S", "RAY_ADDRESS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: env[k] for k in keys[:3]})
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=2, object_store_memory=100 << 20, include_dashboard=False,
             logging_level=logging.WARNING)
    try:
        yield flag
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A synthetic source with two bad images (a truncated one in train, a PNG in val)."""
    root = tmp_path_factory.mktemp("engines")
    data = make_dataset(root / "data", train=30, val=10, test=6)
    train = (data / "split" / "train.txt").read_text().split()
    val = (data / "split" / "val.txt").read_text().split()
    bad = data / train[7]
    bad.write_bytes(bad.read_bytes()[:200])
    (data / val[3]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return data


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def cfg(**kw) -> ShardConfig:
    return ShardConfig(**{"samples_per_shard": 4, "skip_bad": True, "seed": 5, **kw})


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    """The set the serial in-process writer gives (workers=1: every task in the driver)."""
    out = tmp_path_factory.mktemp("ref") / "set"
    write_shards(source, out, cfg(workers=1))
    return files(out)


def test_every_engine_gives_the_same_bytes(ray_flag, source, reference, tmp_path):
    write_shards(source, tmp_path / "pool", cfg(workers=2))
    write_shards(source, tmp_path / "ray", cfg(engine="ray"))
    assert files(tmp_path / "pool") == reference
    assert files(tmp_path / "ray") == reference
    assert len([n for n in reference if n.endswith(".tar")]) == 13  # 29 + 9 + 6 good samples, 4 per shard


def test_a_bad_image_found_on_ray_is_the_same_one_line_error(ray_flag, source, tmp_path):
    errors = []
    for engine in ("local", "ray"):
        with pytest.raises(Exception) as e:
            write_shards(source, tmp_path / engine, cfg(engine=engine, skip_bad=False))
        errors.append((type(e.value), str(e.value)))
    assert errors[0] == errors[1]
    assert re.fullmatch(r".*/split/train\.txt:\d+: image 'img/\d+\.jpg': .* \(and 1 more bad images\)", errors[0][1])
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, no work folder


@pytest.mark.long
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="the real data set is not here")
def test_the_real_data_set_on_ray_equals_the_local_engine(ray_flag, tmp_path):
    write_shards(REAL_DATA, tmp_path / "local", ShardConfig(workers=2))
    write_shards(REAL_DATA, tmp_path / "ray", ShardConfig(engine="ray"))
    assert files(tmp_path / "ray") == files(tmp_path / "local")


def _wait_for(cond, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_worker_killed_mid_task_is_retried_and_the_set_is_the_same(ray_flag, source, reference, tmp_path):
    pids = Path(str(ray_flag) + ".pids")
    shutil.rmtree(pids, ignore_errors=True)
    ray_flag.touch()
    result: dict = {}

    def run() -> None:
        try:
            write_shards(source, tmp_path / "out", cfg(engine="ray"))
        except BaseException as e:  # noqa: BLE001 - reported below
            result["error"] = e

    driver = threading.Thread(target=run)
    driver.start()
    try:
        _wait_for(lambda: pids.is_dir() and any(pids.iterdir()), "a task writing a shard")
        victim = int(next(pids.iterdir()).name)  # the worker process running a task, as the task reported it
        os.kill(victim, signal.SIGKILL)
    finally:
        ray_flag.unlink()
    driver.join(timeout=120)
    assert not driver.is_alive() and "error" not in result, result
    assert files(tmp_path / "out") == reference


def test_a_killed_driver_then_the_same_command_reuses_committed_shards(ray_flag, source, reference, tmp_path):
    out = tmp_path / "out"
    address = ray.get_runtime_context().gcs_address
    ray_flag.touch()
    try:
        args = [sys.executable, "-m", "fastfashion", "shard", str(source), str(out), "--engine", "ray",
                "--ray-address", address, "--samples-per-shard", "4", "--skip-bad", "--seed", "5"]
        proc = subprocess.Popen(args, env=slow_tasks_env(ray_flag, 0.3), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        frags = tmp_path / ".out.partial" / "_fragments"
        _wait_for(lambda: frags.is_dir() and len(list(frags.iterdir())) >= 2, "two committed shards")
        proc.kill()
        proc.wait()
    finally:
        ray_flag.unlink()
    assert not out.exists()
    r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    reused = re.search(r"reused (\d+) of 13 shards", r.stderr)
    assert reused and int(reused.group(1)) >= 2, r.stderr
    assert files(out) == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_source_and_output_in_a_bucket(ray_flag, source, reference, tmp_path):
    from remote_servers import s3_server

    from fastfashion.remote.store import RemoteConfig
    with s3_server() as (opts, bucket):
        import s3fs
        fs = s3fs.S3FileSystem(**opts)
        fs.put(str(source), f"{bucket}/src", recursive=True)
        remote = RemoteConfig(storage_options=opts)
        for engine in ("local", "ray"):
            url = f"s3://{bucket}/sets/{engine}"
            m = write_shards(f"s3://{bucket}/src", url, cfg(engine=engine, workers=2), remote=remote)
            got = {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.find(f"{bucket}/sets/{engine}")}
            # the same tars, indexes and wids indexes; the manifest names the bucket's listing files
            assert {k: v for k, v in got.items() if k != "manifest.json"} == \
                {k: v for k, v in reference.items() if k != "manifest.json"}
            assert m["source"]["fingerprint"] in reference["manifest.json"].decode()
            assert all(s["file"].startswith(f"s3://{bucket}/src/split/") if "file" in s else True
                       for s in m["skipped"])
            assert re.search(f"s3://{bucket}/src/split/(train|val).txt", m["skipped"][0]["reason"])


def test_a_multi_machine_cluster_refuses_local_paths_unless_shared(source, tmp_path):
    from fastfashion.data import shard
    from fastfashion.data.output import LocalTarget

    class TwoHosts:  # what RayEngine reports for a cluster spanning two machines
        name, hosts, slots = "ray", 2, 4

    opened = shard.open_source(source, cfg())
    target = LocalTarget(tmp_path / "out", overwrite=False)
    with pytest.raises(ConfigError, match="spans 2 machines but .* is a local path: give URLs"):
        shard._check_reach(TwoHosts(), opened, target, cfg())
    shard._check_reach(TwoHosts(), opened, target, cfg(shared_output=True))  # declared shared: allowed


def test_sigterm_on_the_driver_cancels_the_ray_tasks(ray_flag, source, tmp_path):
    out = tmp_path / "out"
    frags = tmp_path / ".out.partial" / "_fragments"
    ray_flag.touch()
    try:
        args = [sys.executable, "-m", "fastfashion", "shard", str(source), str(out), "--engine", "ray",
                "--ray-address", ray.get_runtime_context().gcs_address, "--samples-per-shard", "4", "--skip-bad"]
        proc = subprocess.Popen(args, env=slow_tasks_env(ray_flag, 0.3), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: frags.is_dir() and any(frags.iterdir()), "a committed shard")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143 and time.monotonic() - t0 < 15, err
        assert err.splitlines()[-1] == "fastfashion shard: terminated (SIGTERM); temporary files removed"
        committed = sorted(p.name for p in frags.iterdir())
        time.sleep(3)  # a task still running would commit its shard (1.2 s each) meanwhile
        assert sorted(p.name for p in frags.iterdir()) == committed and not out.exists()
    finally:
        ray_flag.unlink()


@pytest.mark.parametrize("listing", [True, False], ids=["index-page", "no-index-page"])
def test_a_source_over_http(source, reference, tmp_path, listing):
    """Images read over http by the workers; the split files found on the server's index page, or without one
    by their usual names."""
    import http.server

    from remote_servers import http_server

    class NoIndex(http.server.SimpleHTTPRequestHandler):
        def list_directory(self, path):
            self.send_error(403)

        def log_message(self, *args) -> None:
            pass

    with http_server(source, **({} if listing else {"handler": NoIndex})) as url:
        write_shards(url, tmp_path / "out", cfg(workers=2))
    got = files(tmp_path / "out")
    assert {k: v for k, v in got.items() if k != "manifest.json"} == \
        {k: v for k, v in reference.items() if k != "manifest.json"}


def test_transient_server_errors_are_retried_and_a_missing_image_is_data(source, reference, tmp_path):
    """The first request for every file of the source server fails with a 503: the conversion retries (with
    backoff) and gives the same set; an image the server does not have is a bad image (skip_bad lists it), not a
    retry."""
    import http.server

    from remote_servers import http_server

    from fastfashion.remote.store import RemoteConfig
    seen: set[str] = set()
    lock = threading.Lock()

    class Flaky(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            with lock:
                first = self.path not in seen
                seen.add(self.path)
            if first:
                self.send_error(503)
            else:
                super().do_GET()

        def log_message(self, *args) -> None:
            pass

    remote = RemoteConfig(backoff=0.01, retries=5)
    with http_server(source, handler=Flaky) as url:
        write_shards(url, tmp_path / "out", cfg(workers=2), remote=remote)
    got = files(tmp_path / "out")
    assert {k: v for k, v in got.items() if k != "manifest.json"} == \
        {k: v for k, v in reference.items() if k != "manifest.json"}
    gone = tmp_path / "gone"
    shutil.copytree(source, gone)
    victim = (gone / "split" / "test.txt").read_text().split()[2]
    (gone / victim).unlink()
    with http_server(gone) as url:
        m = write_shards(url, tmp_path / "out2", cfg(workers=1), remote=remote)
    assert [s["path"] for s in m["skipped"]][-1] == victim
    assert m["skipped"][-1]["reason"].endswith(f"image {victim!r}: cannot read: not found (404)")


@pytest.mark.parametrize("with_schema", [True, False], ids=["schema-beside", "inferred"])
def test_a_csv_source_over_http_equals_the_local_csv(tmp_path, with_schema):
    from remote_servers import http_server
    from second_set import write_csv_set
    csv = write_csv_set(tmp_path / "csv", with_schema=with_schema)
    (tmp_path / "csv" / "images").rename(tmp_path / "csv" / "photos")
    local = write_shards(csv, tmp_path / "local", ShardConfig(workers=1, images=tmp_path / "csv" / "photos"))
    with http_server(tmp_path / "csv") as url:
        remote = write_shards(f"{url}/labels.csv", tmp_path / "remote", ShardConfig(workers=2, images=f"{url}/photos"))
    assert remote["source"] == {**local["source"]}
    assert files(tmp_path / "remote") == files(tmp_path / "local")
