"""The GPU path's rules, tested on the CPU with the CUDA facts injected: one decoder cache size per device per
process, DALI thread defaults, the device of each rank, and when ``auto`` can use DALI on the GPU. The last test
runs a train and a val loader alternately on a real GPU (marker ``gpu``)."""
from __future__ import annotations

import logging

import pytest
import torch
from helpers import make_dataset, needs_dali

from fastfashion.hardware import cuda_device_for
from fastfashion.loading.backends import choose_backend
from fastfashion.loading.backends.dali import (
    CACHE_FRACTION,
    GPU_MAX_THREADS,
    dali_threads,
    decoder_cache_mb,
    process_cache_mb,
)
from fastfashion.loading.backends.dali_check import DaliCudaFacts, gpu_problem
from fastfashion.loading.base import LoaderConfig

GOOD = DaliCudaFacts(dali_cuda=13, driver_cuda=13000, devices=1)
OLD_DRIVER = DaliCudaFacts(dali_cuda=13, driver_cuda=12020, devices=1)  # a T4 on driver 535 with the CUDA 13 build


def test_one_decoder_cache_size_per_device_per_process():
    fixed: dict[int, int] = {}
    assert process_cache_mb(0, 0, fixed) == 0 and fixed == {}  # a loader without the cache fixes nothing
    assert process_cache_mb(0, 900, fixed) == 900  # the first loader with the cache fixes the size ...
    assert process_cache_mb(0, 120, fixed) == 900  # ... a later one (the val split) reuses it
    assert process_cache_mb(0, 0, fixed) == 0  # ... one with the cache off stays off
    assert process_cache_mb(1, 120, fixed) == 120 and fixed == {0: 900, 1: 120}  # another device, its own size


def test_automatic_cache_is_off_under_ddp():
    need, free = 1000, 10_000
    assert need <= CACHE_FRACTION * free
    assert decoder_cache_mb(need, free, None, world_size=1) == need
    assert decoder_cache_mb(need, free, None, world_size=2) == 0  # each rank reads another share every epoch
    assert decoder_cache_mb(need, free, True, world_size=2) == need  # forced on, the user's choice


@pytest.mark.parametrize("gpu,cpus,local_world_size,expected", [
    (True, 192, 8, GPU_MAX_THREADS),  # a big node: 24 cores per GPU, but the GPU does the work
    (True, 16, 8, 2),
    (True, 2, 1, 2),
    (False, 192, 8, 24),  # CPU pipelines: each process its share of the cores
    (False, 2, 1, 2),
    (False, 1, 4, 1),
])
def test_dali_threads(gpu, cpus, local_world_size, expected):
    assert dali_threads(gpu, cpus, local_world_size) == expected


def test_dali_threads_override_is_validated():
    assert LoaderConfig(dali_threads=3).dali_threads == 3
    with pytest.raises(ValueError, match="^dali_threads must be >= 1, got 0$"):
        LoaderConfig(dali_threads=0)


def test_device_of_each_rank(monkeypatch):
    assert cuda_device_for(1, 2) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert cuda_device_for(3, 1) == 0  # one visible GPU per process (CUDA_VISIBLE_DEVICES set per rank)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(RuntimeError, match="^LOCAL_RANK=1, but this process sees only 1 CUDA devices"):
        cuda_device_for(1, 1)  # two ranks on one GPU: NCCL would fail with "Duplicate GPU detected"
    with pytest.raises(RuntimeError, match="^LOCAL_RANK=3, but this process sees only 2 CUDA devices: start at most "
                                           "2 processes per node, or give each process its own GPU$"):
        cuda_device_for(3, 2)
    with pytest.raises(RuntimeError, match="^no CUDA device is visible to this process$"):
        cuda_device_for(0, 0)


def test_gpu_problem_decisions():
    assert gpu_problem(GOOD) is None
    assert gpu_problem(DaliCudaFacts(dali_cuda=12, driver_cuda=12020, devices=2)) is None
    assert gpu_problem(OLD_DRIVER) == ("the installed DALI is built for CUDA 13, but the NVIDIA driver supports CUDA "
                                       "12.2 only; install fastfashion[dali-cu12] (the DALI build for CUDA 12): "
                                       'pip uninstall -y nvidia-dali-cuda130 && pip install -e ".[dali-cu12]"')
    assert gpu_problem(DaliCudaFacts(dali_cuda=13, driver_cuda=None, devices=0)) == \
        "no NVIDIA driver library (libcuda) could be loaded"
    assert gpu_problem(DaliCudaFacts(dali_cuda=None, driver_cuda=13000, devices=0)) == \
        "DALI sees no CUDA device (driver CUDA 13.0)"


@needs_dali
def test_auto_falls_back_to_dali_cpu_when_dali_cannot_use_the_gpu(caplog):
    cuda = torch.device("cuda", 0)  # a device object needs no GPU; the facts say what the machine has
    assert choose_backend("auto", cuda, facts=GOOD) == "dali-gpu"
    with caplog.at_level(logging.WARNING, logger="fastfashion.loading"):
        assert choose_backend("auto", cuda, facts=OLD_DRIVER) == "dali-cpu"
    assert "loader backend: dali-cpu, batches copied to cuda:0 (DALI cannot run on the GPU: the installed DALI is " \
           "built for CUDA 13" in caplog.text and "fastfashion[dali-cu12]" in caplog.text
    for explicit in ("dali", "dali-gpu"):  # the GPU asked for by name: the advice is an error
        with pytest.raises(RuntimeError, match=f"^backend '{explicit}' on cuda:0: DALI cannot run on the GPU: the "
                                               "installed DALI is built for CUDA 13.*fastfashion\\[dali-cu12\\]"):
            choose_backend(explicit, cuda, facts=OLD_DRIVER)
    assert choose_backend("dali-cpu", cuda, facts=OLD_DRIVER) == "dali-cpu"  # no GPU decoding asked for


@pytest.mark.gpu
@needs_dali
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_and_val_loaders_alternate_with_the_decoder_cache_on(tmp_path):
    """DALI keeps one decoder cache per device per process: a val loader built while the train loader lives must
    reuse the train loader's cache size instead of failing at its build (what train does every epoch)."""
    from fastfashion.data.shard import ShardConfig, write_shards
    from fastfashion.loading.loader import make_loader
    shard_dir = tmp_path / "shards"
    write_shards(make_dataset(tmp_path / "data", train=24, val=12, test=4), shard_dir, ShardConfig(workers=1))
    train = make_loader(shard_dir, "train", batch_size=4, device="cuda", image_size=32, gpu_cache=True)
    val = make_loader(shard_dir, "val", batch_size=4, device="cuda", image_size=32, gpu_cache=True)
    for epoch in range(2):
        train.set_epoch(epoch)
        assert sum(b.images.shape[0] for b in train) == 24
        assert sum(b.images.shape[0] for b in val) == 12
    assert train.backend == val.backend == "dali-gpu"
    assert train.active_backend.cache_mb == val.active_backend.cache_mb > 0
    train.close()
    val.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_train_step_lets_cudnn_pick_kernels():
    from fastfashion import FASHION_SCHEMA
    from fastfashion.loading.base import Batch
    from fastfashion.train.trainer import TrainStep, build_model
    dev = torch.device("cuda")
    step = TrainStep(build_model(FASHION_SCHEMA, dev), [torch.ones(k, device=dev) for k in FASHION_SCHEMA.num_classes],
                     dev)
    assert torch.backends.cudnn.benchmark  # fixed input size: cuDNN times the kernels once and keeps the fastest
    x = torch.randn(4, 3, 64, 64)
    y = torch.zeros(4, len(FASHION_SCHEMA), dtype=torch.int64)
    logits, labels, loss = step(Batch(x, y))
    assert labels.is_cuda and torch.isfinite(loss) and [lg.shape for lg in logits] == \
        [(4, k) for k in FASHION_SCHEMA.num_classes]


@pytest.mark.parametrize("record,major", [(122140, 12), ("12.2", 12), (12893, 12), ("12.8", 12), (13088, 13),
                                          ("13.0", 13), (13492, 13), (None, None), (0, None), ("cpu", None)])
def test_cuda_build_version_parse(record, major):
    """DALI's __cuda_version__ is the toolkit version without dots (12.2.140 -> 122140): `// 1000` read it as 122."""
    from fastfashion.hardware import build_cuda_major
    assert build_cuda_major(record) == major


@pytest.mark.parametrize("driver,expected", [(12020, (12, 2)), (12080, (12, 8)), (13000, (13, 0))])
def test_driver_version_parse(driver, expected):
    from fastfashion.hardware import driver_version
    assert driver_version(driver) == expected


def test_cuda_build_problem_names_the_install_command():
    from fastfashion.hardware import CUDA12_INSTALL, cuda_build_problem
    assert cuda_build_problem("torch", "13.0", 12020) == (
        f"torch is built for CUDA 13, but the NVIDIA driver supports CUDA 12.2 only; install the CUDA 12 builds: "
        f"{CUDA12_INSTALL}")
    assert "dali-cu12" in CUDA12_INSTALL and "whl/cu126" in CUDA12_INSTALL
    assert cuda_build_problem("torch", "12.8", 12020) is None  # minor version compatibility
    assert cuda_build_problem("torch", "13.0", 13000) is None
    assert cuda_build_problem("torch", None, 12020) is None  # a CPU build of torch
    assert cuda_build_problem("torch", "13.0", None) is None  # no driver: a machine without a GPU
    assert "update the NVIDIA driver" in cuda_build_problem("torch", "13.0", 11080)
    assert gpu_problem(DaliCudaFacts(dali_cuda=13, driver_cuda=12080, devices=1)).startswith(
        "the installed DALI is built for CUDA 13, but the NVIDIA driver supports CUDA 12.8 only")


def test_torch_that_cannot_use_the_driver_warns_loudly(monkeypatch, caplog):
    """A T4 on driver 535 with the CUDA 13 torch: torch sees no GPU, and training would silently run on the CPU."""
    from fastfashion import hardware
    from fastfashion.hardware import CUDA12_INSTALL, DeviceError, resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(hardware, "driver_cuda_version", lambda: 12020)
    with caplog.at_level(logging.WARNING, logger="fastfashion.hardware"):
        assert resolve_device("auto") == torch.device("cpu")
    assert "running on the CPU although there is an NVIDIA GPU: torch is built for CUDA 13" in caplog.text
    assert CUDA12_INSTALL in caplog.text
    with pytest.raises(DeviceError, match="^device 'cuda' requested but CUDA is not available: torch is built for"):
        resolve_device("cuda")
    monkeypatch.setattr(hardware, "driver_cuda_version", lambda: None)  # no GPU at all: quiet, as before
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastfashion.hardware"):
        assert resolve_device("auto") == torch.device("cpu")
    assert caplog.text == ""


def test_pipeline_horizon_is_capped_by_reader_entries():
    from fastfashion.loading.backends.dali import MAX_READER_ENTRIES, capped_horizon
    assert capped_horizon(8, 100) == 8
    assert capped_horizon(8, MAX_READER_ENTRIES // 3) == 3
    assert capped_horizon(8, 10 * MAX_READER_ENTRIES) == 1  # a huge split: one epoch per pipeline, never 0


@needs_dali
def test_dali_backend_plans_fewer_epochs_when_the_cap_is_reached(tmp_path, monkeypatch):
    from fastfashion.data.shard import ShardConfig, write_shards
    from fastfashion.loading.backends import dali
    from fastfashion.loading.loader import make_loader
    write_shards(make_dataset(tmp_path / "data", train=16, val=4, test=4), tmp_path / "s",
                 ShardConfig(workers=1, samples_per_shard=4))
    loaders = {}
    for cap in (10_000, 9):
        monkeypatch.setattr(dali, "MAX_READER_ENTRIES", cap)
        loader = loaders[cap] = make_loader(tmp_path / "s", "train", batch_size=4, backend="dali-cpu", device="cpu",
                                            image_size=16, block=1)
        assert sum(len(b.labels) for b in loader) == 16
    assert loaders[10_000].active_backend.epochs_planned == [0, 1, 2, 3]  # CPU_HORIZON
    assert 1 <= len(loaders[9].active_backend.epochs_planned) < 4  # >= 4 reader entries per epoch (4 shards)
    for loader in loaders.values():
        loader.close()


@pytest.mark.parametrize("name,engine,load", [("NVIDIA H100 80GB HBM3", True, None), ("NVIDIA H200", True, None),
                                              ("NVIDIA A100-SXM4-40GB", True, None), ("Tesla T4", False, 0.0),
                                              ("NVIDIA GeForce RTX 4090", False, None), (None, False, None)])
def test_hardware_jpeg_decoder_by_gpu_family(name, engine, load):
    from fastfashion.loading.backends.jpeg_engine import DEFAULT_HW_DECODER_LOAD, default_load, has_engine
    assert has_engine(name) is engine
    assert default_load(name) == (DEFAULT_HW_DECODER_LOAD if load is None else load)


def test_dist_backend_can_be_forced_to_gloo(monkeypatch):
    """Two DDP ranks on one GPU (the GPU check's smoke test) need gloo: NCCL refuses a shared device."""
    from fastfashion.errors import ConfigError
    from fastfashion.train.distributed import dist_backend
    monkeypatch.delenv("FASTFASHION_DIST_BACKEND", raising=False)
    assert (dist_backend("cuda"), dist_backend("cpu")) == ("nccl", "gloo")
    monkeypatch.setenv("FASTFASHION_DIST_BACKEND", "gloo")
    assert dist_backend("cuda") == "gloo"
    monkeypatch.setenv("FASTFASHION_DIST_BACKEND", "mpi")
    with pytest.raises(ConfigError, match="^FASTFASHION_DIST_BACKEND must be gloo or nccl, got 'mpi'$"):
        dist_backend("cuda")


def test_hw_decoder_sweep_runs_only_where_the_gpu_has_the_engine():
    from fastfashion.bench.hwdecoder import format_sweep, run_hw_decoder_sweep, sweep_skip_reason
    from fastfashion.bench.throughput import BenchConfig
    from fastfashion.errors import ConfigError
    assert sweep_skip_reason("NVIDIA H100 80GB HBM3", dali=True) is None
    assert sweep_skip_reason("NVIDIA A100-SXM4-80GB", dali=True) is None
    assert sweep_skip_reason("Tesla T4", dali=True).startswith("Tesla T4 has no hardware JPEG decoder")
    assert sweep_skip_reason(None, dali=True).startswith("no CUDA device: the hw_decoder_load sweep needs a GPU")
    assert sweep_skip_reason("NVIDIA H200", dali=False) == "NVIDIA DALI is not importable"
    cfg = BenchConfig(shard_dir="unused")
    assert cfg.hw_decoder_loads == (0.0, 0.5, 0.75, 0.9)
    if not torch.cuda.is_available():  # CPU side: skipped with the reason, no loader is made (no shards needed)
        sweep = run_hw_decoder_sweep(cfg, shards=None)
        assert sweep["status"] == "skipped"
        assert format_sweep(sweep) == f"hw_decoder_load sweep skipped: {sweep['reason']}"
    table = format_sweep({"status": "ok", "gpu": "NVIDIA H100", "default": 0.65, "best": 0.9, "loads": {
        "0.9": {"hw_decoder_load": 0.9, "images_per_s": 9000.0, "p50_ms": 7.1, "p99_ms": 9.0}}})
    assert table.splitlines()[-1].split() == ["0.90", "9000", "7.10", "9.00"]
    with pytest.raises(ConfigError, match="^hw_decoder_loads must be between 0 and 1"):
        BenchConfig(shard_dir="unused", hw_decoder_loads=(1.5,))
