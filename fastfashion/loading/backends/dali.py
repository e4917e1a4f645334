"""The DALI backends, ``dali-gpu`` and ``dali-cpu``: one graph (:mod:`.dali_graph`) fed an exact per-epoch order.

Reading. ``fn.readers.webdataset`` takes ``paths`` and one ``index_paths`` file per path, and reads the samples of
each index file in the order listed, seeking to each member's offset (checked in DALI's
``webdataset_loader.cc``: offsets need not increase, and the same tar may appear in ``paths`` any number of times;
DALI maps each distinct file once). So for every epoch the backend cuts this rank's order
(:mod:`fastfashion.loading.order`) into runs of consecutive samples from one shard and writes one small index file
per run, copying the shard's own ``.idx`` lines; ``random_shuffle`` stays off. With the default shuffle block of 8
that is ~N/8 entries per epoch: a full blocked reshuffle every epoch with the native reader, no Python callback per
sample. The index files of ``horizon`` epochs are concatenated into one pipeline; each epoch is padded to whole
batches (the padding is trimmed, never delivered), so a pipeline lives across epochs and on the GPU keeps its
decoder cache.

GPU decoder cache (``gpu_cache``, dali-gpu only): nvJPEG's cache keeps decoded images on the GPU across the epochs
of a pipeline. None = on for a single-rank run when the split's decoded images fit in :data:`CACHE_FRACTION` of
free GPU memory (under DDP each rank reads a different share every epoch, so about 1/world_size of its lookups
hit: off); False = off; True = on regardless, capped at :data:`FORCED_CACHE_FRACTION` of free GPU memory. It pays
only across complete passes: a pass abandoned mid-epoch (``max_steps``, a benchmark round) rebuilds the pipeline.
DALI keeps one cache per device per process and refuses a second size (:func:`process_cache_mb`).

Content keys. DALI keys what it keeps per file by path: the reader's memory mappings (shared by every pipeline of
the process while one is alive) and, on the GPU, the decoder cache (by path and offset, for the whole process). A
set re-written in place (``fastfashion shard --overwrite`` replaces the folder) has the old paths, so a loader
opened on it could be served the old bytes. The reader is therefore given the tars by content: a per-process
folder of symlinks ``{sha256}.tar`` (the manifest's checksum) to the real tars (:func:`content_path`); a new tar
is a new path to DALI. Symlinks, not hardlinks: DALI keys by the path as given (not resolved), and a hardlink would
fail across filesystems (the folder is on tmpfs).

Threads: :func:`dali_threads`.
"""
from __future__ import annotations

import atexit
import io
import logging
import os
import re
import shutil
import tempfile
import threading

import numpy as np

from ...format.atomic import with_path
from ...format.jpeg import jpeg_header
from ...format.reader import ShardFiles
from ...format.spec import LabelError
from ...fsutil import register_temp
from ...hardware import available_cpus, local_world_size
from ..base import BackendContext, LoaderError
from ..order import pad_to_batch, runs
from .dali_graph import ColourParams, PlannedLabels, RandomParams, fashion_pipeline
from .jpeg_engine import DEFAULT_HW_DECODER_LOAD, default_load

log = logging.getLogger(__name__)

GPU_HORIZON = 8  # epochs per GPU pipeline: it (and its decoder cache) lives that long
CPU_HORIZON = 4  # epochs per CPU pipeline: amortizes a rebuild (~0.3 s, mostly the old pipeline's shutdown)
MAX_READER_ENTRIES = 65_536  # index files (reader entries) per pipeline: caps the horizon of a large split
CACHE_FRACTION = 0.25  # automatic GPU decoder cache: on only when the split fits in this share of free GPU memory
FORCED_CACHE_FRACTION = 0.5  # gpu_cache=True: the cache may take up to this share, leaving the rest to the model
GPU_MAX_THREADS = 8  # CPU threads per GPU pipeline: the GPU does the decoding and augmentation; each mixed-decoder
#                     thread reserves 16 MB of GPU and 2 x 8 MB of pinned memory, so all cores of a big node cost GBs
_LIVE_DIRS: set[str] = set()  # index folders of open backends, removed at exit even if a loader is never closed
atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in list(_LIVE_DIRS)])
_PROCESS_CACHE_MB: dict[int, int] = {}  # device index -> the decoder cache size this process fixed for it
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LINKS: dict[str, object] = {"dir": None, "pid": None, "lock": threading.Lock()}  # this process's content links


def dali_threads(gpu: bool, cpus: int, local_world_size: int = 1) -> int:
    """CPU threads for one DALI pipeline: the process's share of the cores (``cpus // local_world_size``), on the
    GPU at most :data:`GPU_MAX_THREADS` (reading, JPEG headers and the CPU half of the hybrid decode need few)."""
    share = max(1, cpus // max(1, local_world_size))
    return min(GPU_MAX_THREADS, share) if gpu else share


def process_cache_mb(device: int, wanted_mb: int, fixed: dict[int, int] = _PROCESS_CACHE_MB) -> int:
    """The decoder cache size a pipeline on ``device`` must use: DALI keeps one cache per device per process and
    raises "Cache for device N was already initialized with other parameters" for a second size. The first loader
    that turns the cache on fixes its size; later loaders reuse it (entries are keyed by the tar's content path and
    the offset, :func:`content_path`, so a train and a val split share it safely); a loader without the cache (0)
    stays without."""
    if wanted_mb <= 0:
        return 0
    size = fixed.setdefault(device, wanted_mb)
    if size != wanted_mb:
        log.info("GPU decoder cache of device %d: %d MB, as fixed by this process's first loader (this split "
                 "would take ~%d MB)", device, size, wanted_mb)
    return size


def decoder_cache_mb(need_mb: int, free_mb: int, gpu_cache: bool | None, world_size: int = 1) -> int:
    """Size in MB of the GPU decoder cache for a split whose decoded images take ``need_mb``, given ``free_mb`` of
    free GPU memory: ``gpu_cache`` None = ``need_mb`` if one rank reads the split and it fits in CACHE_FRACTION of
    free memory, else 0 (off); False = 0; True = ``need_mb`` capped at FORCED_CACHE_FRACTION of free memory (DALI's
    threshold cache stops adding images once full, so a capped cache holds the first images it sees)."""
    if gpu_cache is False:
        return 0
    if gpu_cache is None:
        return need_mb if world_size == 1 and need_mb <= CACHE_FRACTION * free_mb else 0
    return max(0, min(need_mb, int(FORCED_CACHE_FRACTION * free_mb)))


def capped_horizon(wanted: int, entries_per_epoch: int, cap: int = MAX_READER_ENTRIES) -> int:
    """Epochs one pipeline reads: ``wanted``, fewer when their index files would exceed ``cap`` reader entries in
    all (each is a file in the index folder, usually tmpfs, and an entry the reader holds for the pipeline's life:
    a large split at the default shuffle block writes ~N/8 per epoch), at least 1."""
    return max(1, min(wanted, cap // max(1, entries_per_epoch)))


def _index_dir() -> str | None:
    """Where per-epoch index files go: tmpfs when there is one (creating 600 files there takes 13 ms, on the
    disk-backed /tmp of the team machine 240 ms), else the default temporary folder."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def content_path(tar: str, sha256: str | None) -> str:
    """The path the DALI reader is given for ``tar`` whose content has checksum ``sha256``: a symlink
    ``{sha256}.tar`` to it in this process's link folder (made, or re-pointed at ``tar``, here), so DALI's per-path
    mappings and decoder cache are keyed by content. ``tar`` itself when the checksum is unknown or not a sha256.
    Raises OSError (naming the link) when the link cannot be made."""
    if sha256 is None or not _SHA256.fullmatch(sha256):
        return tar
    target = os.path.abspath(tar)
    with _LINKS["lock"]:
        if _LINKS["pid"] != os.getpid() or not os.path.isdir(_LINKS["dir"]):  # first use, or a forked child
            d = tempfile.mkdtemp(prefix=f"fastfashion-dali-tars-{os.getpid()}-", dir=_index_dir())
            register_temp(d)  # removed by the next command if this process is killed
            _LIVE_DIRS.add(d)  # removed at exit: the links live as long as the process (DALI's caches do too)
            _LINKS.update(dir=d, pid=os.getpid())
        link = os.path.join(_LINKS["dir"], f"{sha256}.tar")
        try:
            if os.readlink(link) == target:
                return link
        except OSError:
            pass
        tmp = f"{link}.{threading.get_ident()}.tmp"  # same content, another copy: re-pointing is harmless
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(target, tmp)
            os.replace(tmp, link)
        except OSError as e:
            raise with_path(e, link) from e
    return link


def size_hint(ctx: BackendContext, probe: int = 32) -> tuple[int, int]:
    """(max height, max width) over a few JPEG headers: decoder preallocation hints."""
    refs = ctx.samples.refs
    hw = [(0, 0)]
    with ShardFiles() as files:
        for r in refs[:: max(1, len(refs) // probe)][:probe]:
            try:  # headers were checked when the split was opened (format/reader.py: check_samples)
                found = jpeg_header(lambda o, n, r=r: files.read(r.tar, r.jpg_offset + o, n), r.jpg_size,
                                    ctx.samples.max_pixels)
            except OSError:  # only a hint: a file that cannot be read is reported by the reader, naming the key
                continue
            if not isinstance(found, str):
                hw.append((found.height, found.width))
    return max(h for h, _ in hw), max(w for _, w in hw)


def _gpu_name(device: int | None) -> str | None:
    import torch
    return torch.cuda.get_device_name(device) if device is not None and torch.cuda.is_available() else None


def _cache_mb(ctx: BackendContext, hint: tuple[int, int]) -> int:
    """The decoder cache size for this split (:func:`decoder_cache_mb` of ``gpu_cache``), logged."""
    import torch
    if ctx.gpu_cache is False:
        log.info("GPU decoder cache off (gpu_cache=False)")
        return 0
    need = int(len(ctx.samples.refs) * hint[0] * hint[1] * 3 * 1.1 / 2 ** 20) + 16
    free = torch.cuda.mem_get_info(ctx.device)[0] // 2 ** 20
    mb = decoder_cache_mb(need, free, ctx.gpu_cache, ctx.world_size)
    if mb == 0 and ctx.world_size > 1:
        log.info("GPU decoder cache off: %d ranks read different shares each epoch (gpu_cache=True forces it)",
                 ctx.world_size)
    elif mb == 0:
        log.info("GPU decoder cache off: ~%d MB needed, %d MB free", need, free)
    elif mb < need:
        log.info("GPU decoder cache on (gpu_cache=True): %d MB of ~%d MB needed (capped at %.0f%% of %d MB "
                 "free): only part of the split is cached", mb, need, 100 * FORCED_CACHE_FRACTION, free)
    else:
        log.info("GPU decoder cache on: %d MB (decoded images stay on the GPU after the first epoch)", mb)
    return mb


class DaliBackend:
    """Owns the DALI pipeline of one loader: writes per-epoch index files, (re)builds the pipeline, runs it.

    ``name`` ``dali-gpu`` decodes on ``ctx.device`` (a CUDA device); ``dali-cpu`` runs every operator on the CPU
    with one thread per available core.
    """

    def __init__(self, name: str, ctx: BackendContext):
        self._dir: str | None = None  # close() may run on a half-built object
        self.ctx = ctx
        gpu = name == "dali-gpu"
        self.device_id = ctx.device.index if gpu else None
        self.horizon = max(1, ctx.horizon or (GPU_HORIZON if gpu else CPU_HORIZON))
        self.size_hint = size_hint(ctx)
        roi = ctx.roi_decode is True and ctx.augment.is_train and ctx.transform is None
        if gpu and roi:  # a cropped decode cannot be cached: the decoder cache stays off (dali_graph.fashion_pipeline)
            log.info("GPU decoder cache off: roi_decode decodes only each crop, which the cache cannot keep")
        self.cache_mb = process_cache_mb(self.device_id, _cache_mb(ctx, self.size_hint)) if gpu and not roi else 0
        self.hw_decoder_load = ctx.hw_decoder_load if ctx.hw_decoder_load is not None else \
            default_load(_gpu_name(self.device_id)) if gpu else DEFAULT_HW_DECODER_LOAD
        # on the GPU the training step wants channels_last (train/device.py): DALI writes HWC, viewed as NCHW
        self.uint8 = ctx.output == "uint8"
        self.channels_last = (gpu and ctx.transform is None) or self.uint8  # uint8: always HWC, as decoded
        self.num_threads = ctx.dali_threads or dali_threads(gpu, available_cpus(), local_world_size())
        self._pipe = None
        self.reader_paths: list[str] = []  # the tar paths the current pipeline's reader was given (content_path)
        self._plan: dict[int, int] = {}  # epoch -> its index in the current pipeline's sequence of epochs
        self._next: int | None = None  # the epoch whose first batch the pipeline produces next (None: unknown)
        self._dir = tempfile.mkdtemp(prefix=f"fastfashion-dali-{os.getpid()}-", dir=_index_dir())
        register_temp(self._dir)  # removed by the next command if this process is killed
        _LIVE_DIRS.add(self._dir)

    @property
    def epochs_planned(self) -> list[int]:
        """The epochs the current pipeline reads, in order (empty before the first epoch)."""
        return list(self._plan)

    def close(self) -> None:
        """Drop the pipeline (its threads and file mappings go with it) and remove the per-epoch index files.
        Idempotent; the next :meth:`epoch` builds a new pipeline."""
        self._pipe = None
        self._plan, self._next = {}, None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            _LIVE_DIRS.discard(self._dir)

    def __del__(self):
        self.close()

    def _write_index_files(self, seq: np.ndarray) -> tuple[list[str], list[str]]:
        """One index file per run of consecutive samples of one shard: (tar paths, index paths) for the reader."""
        os.makedirs(self._dir, exist_ok=True)
        _LIVE_DIRS.add(self._dir)
        for f in os.listdir(self._dir):
            os.unlink(os.path.join(self._dir, f))
        paths, index_paths = [], []
        samples = self.ctx.samples
        shas = samples.shard_sha256 or [None] * len(samples.shards)
        tars = {}  # shard -> the path the reader gets: checked (re-pointed) once per pipeline
        for j, (shard, local) in enumerate(runs(seq, samples.sizes)):
            tar, lines = samples.shards[shard]
            if shard not in tars:
                tars[shard] = content_path(tar, shas[shard])
            ip = os.path.join(self._dir, f"{j:07d}.idx")
            try:
                with open(ip, "w") as f:
                    f.write(f"v1.2 {len(local)}\n")
                    f.write("".join(lines[i] + "\n" for i in local))
            except OSError as e:  # a full /dev/shm (64 MB in a default Docker container) names the file
                raise with_path(e, ip) from e
            paths.append(tars[shard])
            index_paths.append(ip)
        return paths, index_paths

    def _build(self, epochs: list[tuple[int, np.ndarray]]) -> None:
        """A pipeline reading the (padded) orders of ``epochs`` back to back."""
        ctx, b = self.ctx, self.ctx.batch_size
        self._pipe = None
        padded = [pad_to_batch(idx, b) for _, idx in epochs]
        paths, index_paths = self._write_index_files(np.concatenate(padded))
        self.reader_paths = paths
        first = epochs[0][0]
        plan = [(e, p) for (e, _), p in zip(epochs, padded)]
        rand = RandomParams(ctx.augment, seed=ctx.seed, batch_size=b, plan=plan)
        colour = ColourParams(ctx.augment, seed=ctx.seed, batch_size=b, plan=plan) if self.uint8 else None
        labels = None if ctx.samples.label_member == "lbl" else \
            PlannedLabels(ctx.samples.labels, batch_size=b, plan=plan)  # .lbl: DALI reads the tar member itself
        self._pipe = fashion_pipeline(paths=paths, index_paths=index_paths, cfg=ctx.augment, batch_size=b,
                                      device_id=self.device_id, num_threads=self.num_threads,
                                      seed=(ctx.seed * 1_000_003 + first * 7919 + ctx.rank) % (2 ** 31),
                                      cache_mb=self.cache_mb, size_hint=self.size_hint,
                                      roi_decode=ctx.roi_decode, random_params=rand, labels=labels,
                                      transform=ctx.transform, channels_last=self.channels_last,
                                      hw_decoder_load=self.hw_decoder_load, colour=colour)
        self._pipe.build()
        self._plan = {e: k for k, (e, _) in enumerate(epochs)}
        self._next = first
        log.debug("DALI pipeline for epochs %s: %d reader entries", list(self._plan), len(paths))

    def epoch(self, indices: np.ndarray, epoch: int):
        """Yield ``(images, labels)`` torch batches of ``indices`` (this rank's order of ``epoch``); with uint8
        output ``(images, labels, colour)``."""
        if len(indices) == 0:
            return
        if self._pipe is None or self._next != epoch:
            entries = len(runs(pad_to_batch(indices, self.ctx.batch_size), self.ctx.samples.sizes))
            horizon = capped_horizon(self.horizon, entries, MAX_READER_ENTRIES)
            if horizon < self.horizon:
                log.debug("DALI pipeline horizon %d epochs, not %d: %d reader entries per epoch", horizon,
                          self.horizon, entries)
            self._build([(e, indices if e == epoch else self.ctx.order_of(e))
                         for e in range(epoch, epoch + horizon)])
        self._next = None  # mid-epoch until the last batch is out
        import torch
        from nvidia.dali.plugin.pytorch.torch_utils import to_torch_tensor
        n, b = len(indices), self.ctx.batch_size
        # the outputs on torch's current stream: ordered before the step's kernels, no host sync per batch
        stream = torch.cuda.current_stream(self.device_id) if self.device_id is not None else None
        for a in range(0, n, b):
            try:
                images, labels, *colour = self._pipe.run(stream)
                x = to_torch_tensor(images.as_tensor(), copy=False)  # zero-copy (DLPack)
                y = to_torch_tensor(labels.as_tensor(), copy=False)
                m = to_torch_tensor(colour[0].as_tensor(), copy=False) if colour else None
                if self.channels_last:  # NHWC memory as an NCHW tensor with channels_last strides: no copy
                    x = x.permute(0, 3, 1, 2)
            except RuntimeError as e:
                self._pipe = None
                raise self._culprit(indices[a:a + b], e) from e
            k = min(b, n - a)
            out = (x, y) if m is None else (x, y, m)
            yield tuple(t[:k] for t in out) if k < b else out
        nxt = epoch + 1
        self._next = nxt if nxt in self._plan else None

    def _culprit(self, batch_indices: np.ndarray, cause: BaseException) -> LoaderError:
        """Name the shard and key of the sample that made DALI fail (checked with PIL, by offset), in the torch
        backend's words for the same sample (``{tar}: sample {key!r}: {PIL's first line}``)."""
        from PIL import Image
        refs, width = self.ctx.samples.refs, len(self.ctx.schema)
        with ShardFiles() as files:
            for i in batch_indices:
                r = refs[int(i)]
                try:
                    data, lbl = files.sample(r)
                    if self.ctx.samples.label_member == "lbl" and len(lbl) != 8 * width:
                        raise LabelError(f".lbl has {len(lbl)} bytes, expected {8 * width}")
                    Image.open(io.BytesIO(data)).load()
                except Exception as e:  # noqa: BLE001 - any failure here is the diagnosis
                    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    return LoaderError(f"{r.tar}: sample {r.key!r}: {first}")
        keys = [refs[int(i)].key for i in batch_indices]
        shards = sorted({refs[int(i)].tar for i in batch_indices})
        lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "rror" in ln and "Critical error in pipeline" not in ln), None) \
            or (lines[0] if lines else type(cause).__name__)
        return LoaderError(f"{', '.join(shards)}: DALI failed on the batch of keys {keys} (each decodes with PIL): "
                           f"{detail}")
