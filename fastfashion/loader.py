"""``make_loader()``: backend choice, exact epochs, per-epoch shuffle, ranks, ``len()``, keys, resume state.

Backends (by name; DALI is imported lazily and a fallback is logged):

* ``dali`` on ``cuda`` ("dali-gpu"): the graph of :mod:`fastfashion.pipeline` with ``mixed`` decoding; images and
  labels arrive on the GPU, handed to torch zero-copy (DLPack, DALI's dynamic executor).
* ``dali`` on ``cpu`` ("dali-cpu"): the same graph on CPU operators, ``num_threads`` = cores.
* ``torch``: :mod:`fastfashion.torch_backend`, PIL decode + torchvision transforms in a DataLoader with workers
  (portable fallback: no DALI needed, runs wherever torch does).
* ``auto``: dali-gpu when CUDA is available, else dali-cpu, else torch — and the log says which and why.

Every backend reads the same order: :func:`fastfashion.order.epoch_indices` of ``(seed, epoch, rank,
world_size)`` — so ``len()`` is exact, each sample is delivered exactly once per epoch on exactly one rank (train:
``drop_last``, a different remainder dropped each epoch; val/test: everything, the last batch may be smaller, ranks'
shares may differ by one sample), and keys come from that order (no per-sample metadata through the pipeline).
After a complete pass the loader moves to the next epoch by itself; ``set_epoch(e)`` chooses one explicitly.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .augment import AugmentConfig, resolve
from .dali_index import IndexFormatError, index_line, read_index
from .order import DEFAULT_BLOCK, epoch_indices, num_batches
from .schema import FASHION_SCHEMA, Schema
from .shard_format import read_manifest
from .validate import default_workers

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BACKENDS = ("auto", "dali", "torch")
GPU_HORIZON = 8  # epochs per GPU pipeline: it (and its decoder cache) lives that long
CPU_HORIZON = 4  # epochs per CPU pipeline: amortizes a rebuild (~0.3 s, mostly the old pipeline's shutdown)
CACHE_FRACTION = 0.25  # automatic GPU decoder cache: on only when the split fits in this share of free GPU memory
FORCED_CACHE_FRACTION = 0.5  # gpu_cache=True: the cache may take up to this share, leaving the rest to the model


class Batch(NamedTuple):
    """``images`` float [B,3,H,W] normalized (on the loader's device), ``labels`` int64 [B,len(schema)]
    (-1 for unlabelled splits), ``keys`` list[str] when the loader was made with ``with_keys=True``, else None."""

    images: Any
    labels: Any
    keys: list[str] | None = None


class LoaderError(RuntimeError):
    """A shard or sample cannot be loaded; the message names the shard (tar) and the sample key."""


@dataclasses.dataclass(frozen=True)
class SampleRef:
    """Where one sample lives: its tar and the byte ranges of its ``.jpg`` and ``.lbl`` members."""

    key: str
    tar: str
    jpg_offset: int
    jpg_size: int
    lbl_offset: int
    lbl_size: int


class ShardFiles:
    """Open shard tars (one read-only descriptor each, opened on first use) and read members by byte offset.

    Descriptors are not pickled: a DataLoader worker started by spawn (macOS, Windows) opens its own."""

    def __init__(self):
        self._fds: dict[str, int] = {}

    def read(self, path: str, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` of ``path``. Raises OSError, also for a short read."""
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))  # O_BINARY: Windows
        if hasattr(os, "pread"):
            data = os.pread(fd, size, offset)
        else:  # Windows: no pread; each process has its own descriptors and reads from one thread
            os.lseek(fd, offset, os.SEEK_SET)
            data = os.read(fd, size)
        if len(data) != size:
            raise OSError(f"short read ({len(data)} of {size} bytes at offset {offset})")
        return data

    def sample(self, ref: SampleRef) -> tuple[bytes, bytes]:
        """The ``.jpg`` and ``.lbl`` bytes of one sample."""
        return self.read(ref.tar, ref.jpg_offset, ref.jpg_size), self.read(ref.tar, ref.lbl_offset, ref.lbl_size)

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass

    def __getstate__(self):
        return {"_fds": {}}

    def __enter__(self) -> "ShardFiles":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()


def decoder_cache_mb(need_mb: int, free_mb: int, gpu_cache: bool | None) -> int:
    """Size in MB of the GPU decoder cache for a split whose decoded images take ``need_mb``, given ``free_mb`` of
    free GPU memory: ``gpu_cache`` None = ``need_mb`` if it fits in CACHE_FRACTION of free memory, else 0 (off);
    False = 0; True = ``need_mb`` capped at FORCED_CACHE_FRACTION of free memory (DALI's threshold cache stops
    adding images once full, so a capped cache holds the first images it sees)."""
    if gpu_cache is False:
        return 0
    if gpu_cache is None:
        return need_mb if need_mb <= CACHE_FRACTION * free_mb else 0
    return max(0, min(need_mb, int(FORCED_CACHE_FRACTION * free_mb)))


def _parse_idx(idx_path: Path, tar_path: Path, width: int) -> tuple[list[str], list[SampleRef]]:
    """The ``.idx`` lines of a shard's samples and their :class:`SampleRef`; checks them against the tar size and
    the label width (``width`` int64 per ``.lbl``)."""
    try:
        entries = read_index(idx_path)
    except (OSError, IndexFormatError) as e:
        raise LoaderError(f"{idx_path}: cannot read the index: {e}") from e
    try:
        tar_size = os.path.getsize(tar_path)
    except OSError as e:
        raise LoaderError(f"{tar_path}: shard is missing: {e}") from e
    lines, refs = [], []
    for n, entry in enumerate(entries, start=2):
        key = entry.key.rsplit("/", 1)[-1]
        if "jpg" not in entry.members or "lbl" not in entry.members:
            raise LoaderError(f"{idx_path}:{n}: sample {key!r} lacks a .jpg or .lbl member")
        end = max(off + size for off, size in entry.members.values())
        if end > tar_size:
            raise LoaderError(f"{tar_path}: shard is truncated: sample {key!r} ends at byte {end}, "
                              f"the file has {tar_size}")
        (jo, js), (lo, ls) = entry.members["jpg"], entry.members["lbl"]
        if ls != 8 * width:
            raise LoaderError(f"{tar_path}: sample {key!r}: .lbl has {ls} bytes, expected {8 * width} "
                              f"(int64 x {width})")
        refs.append(SampleRef(key, str(tar_path), jo, js, lo, ls))
        lines.append(index_line(entry))
    return lines, refs


def resolve_device(device) -> "torch.device":
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]`` as a torch.device. Raises ValueError for
    anything else and RuntimeError when CUDA is asked for but not available."""
    import torch
    dev = str(device) if device is not None else "auto"
    if dev not in ("auto", "cpu") and not dev.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    cuda = torch.cuda.is_available()
    if dev.startswith("cuda") and not cuda:
        raise RuntimeError(f"device {dev!r} requested but CUDA is not available")
    return torch.device(("cuda" if cuda else "cpu") if dev == "auto" else dev)


def _choose_backend(backend: str, device) -> tuple[str, str]:
    """(backend name as reported, torch device string)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    asked = str(device) if device is not None else "auto"
    dev = str(resolve_device(device))
    if backend == "torch":
        return "torch", dev
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        if backend == "dali":
            raise RuntimeError(f"backend 'dali' requested but DALI cannot be imported: {e}") from e
        log.warning("loader backend: torch (NVIDIA DALI is not importable: %s)", e)
        return "torch", dev
    if asked == "auto":
        why = "CUDA is available" if dev.startswith("cuda") else "no CUDA device"
    else:
        why = f"device={dev!r} requested"
    name = "dali-gpu" if dev.startswith("cuda") else "dali-cpu"
    log.info("loader backend: %s (%s)", name, why)
    return name, dev


def _dist(rank, world_size) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return (dist.get_rank() if rank is None else int(rank),
                dist.get_world_size() if world_size is None else int(world_size))
    return (0 if rank is None else int(rank)), (1 if world_size is None else int(world_size))


class FashionLoader:
    """An epoch-exact loader over one split of a shard directory. Build it with :func:`make_loader`."""

    def __init__(self, shard_dir, *, split, batch_size, backend, device, augment, shuffle, image_size, seed, rank,
                 world_size, with_keys, drop_last, workers=None, block=DEFAULT_BLOCK, gpu_cache=None):
        self.shard_dir = Path(shard_dir)
        manifest = read_manifest(self.shard_dir)
        if split not in manifest.get("splits", {}):
            raise ValueError(f"{self.shard_dir}: no split {split!r} (has {sorted(manifest.get('splits', {}))})")
        self.schema = Schema.from_dict(manifest["schema"]) if "schema" in manifest else FASHION_SCHEMA
        self.split, self.batch_size, self.seed = split, int(batch_size), int(seed)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.shuffle = split == "train" if shuffle is None else bool(shuffle)
        self.drop_last = split == "train" if drop_last is None else bool(drop_last)
        self.rank, self.world_size = _dist(rank, world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} out of range for world_size {self.world_size}")
        self.augment: AugmentConfig = resolve(augment, split=split, image_size=image_size)
        self.with_keys, self.block, self.epoch = bool(with_keys), int(block), 0
        self.shards: list[tuple[str, list[str]]] = []
        self.refs: list[SampleRef] = []
        for sh in manifest["splits"][split]["shards"]:
            lines, refs = _parse_idx(self.shard_dir / sh["idx"], self.shard_dir / sh["tar"], len(self.schema))
            if len(refs) != sh["num_samples"]:
                raise LoaderError(f"{self.shard_dir / sh['idx']}: {len(refs)} samples, manifest says "
                                  f"{sh['num_samples']}")
            self.shards.append((str(self.shard_dir / sh["tar"]), lines))
            self.refs.extend(refs)
        self.sizes = [len(lines) for _, lines in self.shards]
        self.num_samples = len(self._indices(0))
        if self.num_samples == 0:
            log.warning("%s split %r: rank %d of %d gets no sample (batch_size %d, drop_last %s)", self.shard_dir,
                        split, self.rank, self.world_size, self.batch_size, self.drop_last)
        if gpu_cache not in (None, True, False):
            raise ValueError(f"gpu_cache must be None, True or False, got {gpu_cache!r}")
        self.gpu_cache = gpu_cache
        self.backend, dev = _choose_backend(backend, device)
        if gpu_cache is not None and self.backend != "dali-gpu":
            log.debug("gpu_cache=%s ignored: backend %s has no GPU decoder cache", gpu_cache, self.backend)
        import torch
        self.device = torch.device(dev)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())  # DDP sets it to the local rank
        self._workers = min(4, default_workers()) if workers is None else int(workers)
        self._impl = None

    # --- order -------------------------------------------------------------------------------------------
    def _indices(self, epoch: int) -> np.ndarray:
        return epoch_indices(self.sizes, seed=self.seed, epoch=epoch, shuffle=self.shuffle, rank=self.rank,
                             world_size=self.world_size, batch_size=self.batch_size, drop_last=self.drop_last,
                             block=self.block)

    def __len__(self) -> int:
        return num_batches(self.num_samples, self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch the next iteration delivers (order = f(seed, epoch, rank, world_size))."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])

    def keys(self, epoch: int | None = None) -> list[str]:
        """Sample keys of an epoch on this rank, in delivery order (what ``with_keys`` yields, batch by batch)."""
        return [self.refs[i].key for i in self._indices(self.epoch if epoch is None else epoch)]

    # --- iteration ---------------------------------------------------------------------------------------
    def _make_impl(self):
        if self.backend == "torch":
            from .torch_backend import TorchShardReader
            return TorchShardReader(self.refs, self.augment, batch_size=self.batch_size, workers=self._workers,
                                    seed=self.seed, rank=self.rank,
                                    pin_memory=self.device.type == "cuda")  # non_blocking copies need pinned memory
        from .pipeline import DaliEpochs
        gpu = self.backend == "dali-gpu"
        cache_mb = self._cache_mb() if gpu else 0
        return DaliEpochs(self.shards, self.augment, batch_size=self.batch_size,
                          device_id=self.device.index if gpu else None, seed=self.seed, rank=self.rank,
                          horizon=GPU_HORIZON if gpu else CPU_HORIZON, cache_mb=cache_mb, size_hint=self._size_hint())

    def _size_hint(self, probe: int = 32) -> tuple[int, int]:
        """(max height, max width) over a few JPEG headers: decoder preallocation hints."""
        from PIL import Image
        import io
        hw = [(0, 0)]
        with ShardFiles() as files:
            for r in self.refs[:: max(1, len(self.refs) // probe)][:probe]:
                try:
                    w, h = Image.open(io.BytesIO(files.read(r.tar, r.jpg_offset, r.jpg_size))).size
                except OSError:
                    continue
                hw.append((h, w))
        return max(h for h, _ in hw), max(w for _, w in hw)

    def _cache_mb(self) -> int:
        """The decoder cache size for this split (:func:`decoder_cache_mb` of ``gpu_cache``), logged."""
        import torch
        if self.gpu_cache is False:
            log.info("GPU decoder cache off (gpu_cache=False)")
            return 0
        h, w = self._size_hint()
        need = int(len(self.refs) * h * w * 3 * 1.1 / 2 ** 20) + 16
        free = torch.cuda.mem_get_info(self.device)[0] // 2 ** 20
        mb = decoder_cache_mb(need, free, self.gpu_cache)
        if mb == 0:
            log.info("GPU decoder cache off: ~%d MB needed, %d MB free", need, free)
        elif mb < need:
            log.info("GPU decoder cache on (gpu_cache=True): %d MB of ~%d MB needed (capped at %.0f%% of %d MB "
                     "free): only part of the split is cached", mb, need, 100 * FORCED_CACHE_FRACTION, free)
        else:
            log.info("GPU decoder cache on: %d MB (decoded images stay on the GPU after the first epoch)", mb)
        return mb

    def __iter__(self):
        epoch = self.epoch
        indices = self._indices(epoch)
        if self._impl is None:
            self._impl = self._make_impl()
        if self.backend == "torch":
            batches = ((b.images, b.labels, None) for b in self._impl.epoch(indices, epoch))
        else:
            batches = self._impl.epoch(epoch, indices, self._indices)
        a = 0
        try:
            for images, labels, _ in batches:
                k = len(labels)
                keys = [self.refs[i].key for i in indices[a:a + k]] if self.with_keys else None
                a += k
                if images.device != self.device:
                    images = images.to(self.device, non_blocking=True)
                    labels = labels.to(self.device, non_blocking=True)
                yield Batch(images, labels, keys)
        except Exception as e:
            from .pipeline import DaliBatchError
            if isinstance(e, DaliBatchError):
                raise self._culprit(e) from e
            raise
        assert a == len(indices), (a, len(indices))
        if self.epoch == epoch:
            self.epoch = epoch + 1  # a complete pass: the next iteration reshuffles

    def _culprit(self, err) -> LoaderError:
        """Name the shard and key of the sample that made DALI fail (checked with PIL, by offset)."""
        from PIL import Image
        import io
        with ShardFiles() as files:
            for i in err.indices:
                r = self.refs[int(i)]
                try:
                    data, lbl = files.sample(r)
                    if len(lbl) != 8 * len(self.schema):
                        raise ValueError(f".lbl has {len(lbl)} bytes, expected {8 * len(self.schema)}")
                    Image.open(io.BytesIO(data)).load()
                except Exception as e:  # noqa: BLE001 — any failure here is the diagnosis
                    return LoaderError(f"{r.tar}: sample {r.key!r} cannot be loaded: {e}")
        keys = [self.refs[int(i)].key for i in err.indices]
        first = str(err.cause).strip().splitlines()[0] if str(err.cause).strip() else type(err.cause).__name__
        return LoaderError(f"{self.shard_dir} split {self.split!r}: DALI failed on the batch of keys {keys}: {first}")

    def close(self) -> None:
        if self._impl is not None and hasattr(self._impl, "close"):
            self._impl.close()
        self._impl = None

    def __repr__(self) -> str:
        return (f"FashionLoader({str(self.shard_dir)!r}, split={self.split!r}, backend={self.backend!r}, "
                f"device={str(self.device)!r}, batches={len(self)}, rank={self.rank}/{self.world_size})")


def make_loader(shard_dir: str | os.PathLike, split: str = "train", batch_size: int = 64, backend: str = "auto",
                device="auto", augment: AugmentConfig | bool | None = None, shuffle: bool | None = None,
                image_size: int = 224, seed: int = 0, rank: int | None = None, world_size: int | None = None,
                with_keys: bool = False, drop_last: bool | None = None, *, workers: int | None = None,
                block: int = DEFAULT_BLOCK, gpu_cache: bool | None = None) -> FashionLoader:
    """An epoch-exact loader over ``split`` of a shard directory (see the module docstring and ARCHITECTURE.md).

    ``augment``: None = train augmentation for the train split, eval transform otherwise; a bool forces it; an
    :class:`~fastfashion.augment.AugmentConfig` sets every knob (``image_size`` here overrides its own).
    ``shuffle``/``drop_last``: None = on for train, off otherwise. ``rank``/``world_size``: None = from
    ``torch.distributed`` when initialized, else 0/1. ``workers``: DataLoader workers of the torch backend.
    ``block``: shuffle block size (:mod:`fastfashion.order`). ``gpu_cache`` (dali-gpu only; other backends ignore
    it, with a debug log): the nvJPEG decoder cache that keeps decoded images on the GPU across the epochs of a
    pipeline — None = on when the split's decoded images fit in CACHE_FRACTION (25 %) of free GPU memory, False =
    off, True = on regardless, capped at FORCED_CACHE_FRACTION (50 %) of free GPU memory (benchmarks compare the
    three). Raises :class:`LoaderError` for a missing or truncated shard, ValueError for bad arguments (a
    ``gpu_cache`` that is not None/True/False included), RuntimeError when a requested backend/device cannot run.
    """
    return FashionLoader(shard_dir, split=split, batch_size=batch_size, backend=backend, device=device,
                         augment=augment, shuffle=shuffle, image_size=image_size, seed=seed, rank=rank,
                         world_size=world_size, with_keys=with_keys, drop_last=drop_last, workers=workers,
                         block=block, gpu_cache=gpu_cache)
