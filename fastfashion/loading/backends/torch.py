"""The ``torch`` backend, the portable path: PIL + torchvision over the shards, in a DataLoader with workers.

* :class:`ShardDataset` — map-style access to the samples of a split's WebDataset shards. It does NOT go through
  the webdataset library: each sample's ``.jpg`` and ``.lbl`` members are read by byte offset (the offsets of the
  shards' DALI ``.idx`` files, :class:`~fastfashion.format.reader.ShardFiles`), the JPEG decoded with PIL and
  transformed with torchvision (v2, on PIL images). Why: random access is what lets this backend deliver exactly
  the order of :mod:`fastfashion.loading.order` — the same as the DALI backend, sample for sample — with any number of
  workers; a streaming ``webdataset.WebDataset`` reads each shard front to back and cannot. The tars stay plain
  WebDataset shards that the webdataset library reads as well.
* ``output="uint8"``: :class:`~fastfashion.loading.backends.torch_uint8.Uint8Sample` instead of the torchvision
  transform (decode_jpeg or a DCT-scaled PIL decode, uint8 geometry, the same draws), each image written into one
  ``[B, H, W, 3]`` uint8 buffer per batch (:class:`Uint8Batch`, in shared memory inside a worker: a quarter of the
  float batch's bytes, and no copy to hand it over) with the batch's colour matrices; delivered as an NCHW view
  (channels_last strides), as the DALI backends deliver uint8.
* A custom transform (``make_loader(..., augment=callable)``) replaces the torchvision one: it gets the decoded RGB
  PIL image and returns a CHW tensor (torchvision v2 transforms take PIL images), seeded per sample like the built-in
  one; with DataLoader workers started by forkserver or spawn it must be picklable (no lambda).
* :class:`TorchBackend` — the DataLoader over it, one epoch's order at a time. A sample that cannot be loaded
  travels to the main process as data and is raised there as the one-line
  :class:`~fastfashion.loading.base.LoaderError` naming shard and key (raised in a worker, torch would re-wrap it
  in a multi-line "Caught ... in DataLoader worker process" message).
"""
from __future__ import annotations

import functools
import io
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ...format.reader import SampleRef, ShardFiles
from ...schema import Schema
from ..augment import RAND_FIELDS, AugmentConfig, draw_params, sample_seed
from ..base import BackendContext, LoaderError
from ..colour import colour_matrices
from .torch_uint8 import Uint8Sample

log = logging.getLogger(__name__)


def torchvision_transform(cfg: AugmentConfig):
    """torchvision (v2) transform on a PIL image -> normalized float CHW tensor, as ``cfg`` says.

    The geometric and colour ops run on PIL images: torchvision's tensor ColorJitter (hue) is several times slower
    than PIL's on CPU."""
    from torchvision.transforms import v2 as T
    if cfg.is_train:
        ops = [T.RandomResizedCrop(cfg.image_size, scale=cfg.scale, ratio=cfg.ratio, antialias=True),
               T.RandomHorizontalFlip(cfg.flip)]
        if cfg.rotation:
            ops.append(T.RandomRotation(cfg.rotation))
        if cfg.photometric:
            ops.append(T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue))
    else:
        ops = [T.Resize(cfg.eval_resize, antialias=True), T.CenterCrop(cfg.image_size)]
    dtype = torch.float16 if cfg.fp16 else torch.float32
    ops += [T.PILToTensor(), T.ToDtype(dtype, scale=True), T.Normalize(cfg.mean, cfg.std)]
    return T.Compose(ops)


class ShardDataset(Dataset):
    """Samples of one split by global index (manifest order), read by offset from the tars."""

    def __init__(self, refs: Sequence[SampleRef], cfg: AugmentConfig, schema: Schema, seed: int = 0,
                 labels: np.ndarray | None = None, transform: Callable | None = None, uint8: bool = False):
        self.refs, self.cfg, self.schema, self.seed, self.uint8 = list(refs), cfg, schema, seed, uint8
        # class ids decoded and range-checked once when the split was read (format/reader.py: SplitSamples.labels)
        self.labels = np.full((len(self.refs), len(schema)), -1, dtype=np.int64) if labels is None else labels
        self.custom = transform is not None  # the loader's augment= callable: RGB PIL image -> CHW tensor
        # uint8: decode_jpeg (or a DCT-scaled PIL decode) + uint8 geometry, written straight into the batch
        self.transform = transform if transform is not None or uint8 else torchvision_transform(cfg)
        self.sample = Uint8Sample(cfg, seed) if uint8 else None
        self.files = ShardFiles()  # per worker process: descriptors opened lazily, in the worker

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, item: int | tuple[int, int]):
        """``(image, labels, key)`` of global sample ``i`` (``item``: ``i`` or ``(i, epoch)``); the random
        transform is seeded from ``(seed, epoch, i)``, so it does not depend on the worker or the batch. uint8
        output: ``(image, labels, key, colour)``, the colour matrix drawn from the sample's parameters
        (:func:`~fastfashion.loading.augment.draw_params`), as on the DALI backends. Raises :class:`LoaderError`
        naming shard and key."""
        from PIL import Image
        i, epoch = item if isinstance(item, tuple) else (item, 0)
        if self.uint8:
            b = self.uint8_batch([(i, epoch)])
            return b.images[0].permute(2, 0, 1), b.labels[0], b.keys[0], b.colour[0]
        r = self.refs[i]
        try:
            jpg = self.files.read(r.tar, r.jpg_offset, r.jpg_size)
            with Image.open(io.BytesIO(jpg)) as im:
                img = im.convert("RGB")
        except Exception as e:  # noqa: BLE001 - untrusted bytes: any decoder failure (DecompressionBombError ...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LoaderError(f"{r.tar}: sample {r.key!r}: {first}") from e
        with torch.random.fork_rng(devices=[]):  # without workers this runs in the trainer's process: keep its RNG
            torch.manual_seed(sample_seed(self.seed, epoch, i))
            image = self.transform(img)
        if self.custom and not isinstance(image, torch.Tensor):
            raise LoaderError(f"{r.tar}: sample {r.key!r}: the augment callable returned a "
                              f"{type(image).__name__}, not a tensor (end it with e.g. torchvision's v2.ToImage() "
                              "and v2.ToDtype(torch.float32, scale=True))")
        return image, torch.from_numpy(self.labels[i].copy()), r.key

    def __getitems__(self, indices: Sequence[int]):
        """The DataLoader's batch fetch: a :class:`LoaderError` becomes a :class:`_Failed` batch (plain data), so
        the main process raises it with its own one-line message. uint8 output: one :class:`Uint8Batch`."""
        try:
            return self.uint8_batch(indices) if self.uint8 else [self[i] for i in indices]
        except LoaderError as e:
            return [_Failed(str(e))]

    def uint8_batch(self, items: Sequence[int | tuple[int, int]]) -> Uint8Batch:
        """The uint8 batch of ``items`` (``i`` or ``(i, epoch)``): each image written by :class:`Uint8Sample` into
        one [B, H, W, 3] buffer (in shared memory in a DataLoader worker: the main process maps it, no copy), the
        colour matrices drawn for the whole batch at once. Raises :class:`LoaderError` naming shard and key."""
        items = [item if isinstance(item, tuple) else (item, 0) for item in items]
        idx = np.array([i for i, _ in items], dtype=np.int64)
        images = _batch_buffer(len(items), *self.cfg.hw)
        hwc = images.numpy()
        for k, (i, epoch) in enumerate(items):
            r = self.refs[i]
            where = f"{r.tar}: sample {r.key!r}"
            try:
                jpg = self.files.read(r.tar, r.jpg_offset, r.jpg_size)
            except OSError as e:
                raise LoaderError(f"{where}: {e}") from e
            self.sample(jpg, where, i, epoch, hwc[k])
        params = None
        if self.cfg.is_train:  # drawn per epoch (a batch of the sampler's has one; direct calls may mix them)
            epochs = np.array([e for _, e in items], dtype=np.int64)
            params = np.zeros((len(items), len(RAND_FIELDS)), dtype=np.float32)
            for e in np.unique(epochs):
                params[epochs == e] = draw_params(self.cfg, self.seed, int(e), idx[epochs == e])
        colour = colour_matrices(self.cfg, params, len(items))
        return Uint8Batch(images, torch.from_numpy(self.labels[idx]), [self.refs[i].key for i in idx],
                          torch.from_numpy(colour))


class Uint8Batch(NamedTuple):
    """A uint8 batch as a worker hands it over: ``images`` uint8 [B, H, W, 3] (viewed as NCHW in the main process),
    ``labels`` int64 [B, attributes], ``keys``, ``colour`` float32 [B, 3, 4]."""

    images: torch.Tensor
    labels: torch.Tensor
    keys: list[str]
    colour: torch.Tensor


def _batch_buffer(n: int, height: int, width: int) -> torch.Tensor:
    """An uninitialised uint8 [n, height, width, 3]; in shared memory inside a DataLoader worker (as torch's
    default_collate allocates), so handing it to the main process moves no pixels."""
    shape = (n, height, width, 3)
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(n * height * width * 3)
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


class _Failed:
    """A batch that could not be loaded: the message of its :class:`LoaderError`."""

    def __init__(self, message: str):
        self.message = message


class _EpochBatches:
    """A batch sampler whose batches the loader replaces each epoch: ``(sample index, epoch)`` items."""

    def __init__(self, batch_size: int):
        self.batch_size, self.indices, self.epoch = batch_size, np.zeros(0, dtype=np.int64), 0

    def __iter__(self):
        for a in range(0, len(self.indices), self.batch_size):
            yield [(int(i), self.epoch) for i in self.indices[a:a + self.batch_size]]

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)


def collate(samples) -> tuple | _Failed:
    """``(images, labels, keys)`` stacked from ``(image, labels, key)`` samples; a :class:`Uint8Batch` (assembled
    by the dataset) and a failed batch pass through."""
    if isinstance(samples, Uint8Batch):
        return samples
    if len(samples) == 1 and isinstance(samples[0], _Failed):
        return samples[0]
    images, labels, keys = zip(*samples)
    return torch.stack(images), torch.stack(labels), list(keys)


def worker_context():
    """The multiprocessing context for DataLoader workers: ``forkserver`` once DALI is loaded in this process
    (workers fork from a clean server process that preloaded torch), else the platform default (fork on Linux).

    Forking a process in which DALI runs threads is unsafe: a forked worker inherits locks held by threads that do
    not exist in it, and DataLoader workers were seen to die with a segmentation fault when forked after a DALI
    pipeline had run in the same process. The server costs one start per process (~2 s: torch); like ``spawn``, it
    needs a script's top-level code under ``if __name__ == "__main__":`` (:class:`TorchBackend` refuses, naming the
    line, when it is not: :func:`unguarded_main_line`)."""
    import multiprocessing as mp
    import sys
    if "forkserver" not in mp.get_all_start_methods() or "nvidia.dali" not in sys.modules:
        return None
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "PIL.Image", "torchvision.transforms.v2", __name__])
    return ctx


def unguarded_main_line() -> tuple[str, int] | None:
    """``(script, line)`` when this call comes from top-level code of the main script that is not under
    ``if __name__ == "__main__":`` (a worker started by forkserver or spawn imports the script again, runs that code
    again and dies trying to start processes of its own: torch then reports only "DataLoader worker ... exited
    unexpectedly"); None otherwise, and whenever it cannot tell (an interactive session, a notebook, no source)."""
    import ast
    import sys
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if spec is not None and (spec.name == "__main__" or spec.name.endswith(".__main__")):
        return None  # a package's __main__ (python -m fastfashion): multiprocessing does not run it again
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals is vars(main)):
        frame = frame.f_back
    if not path or frame is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    line = frame.f_lineno
    top = next((n for n in tree.body if n.lineno <= line <= (n.end_lineno or n.lineno)), None)
    return None if top is None or _is_main_guard(top) else (path, line)


def _is_main_guard(node) -> bool:
    """Whether ``node`` is ``if __name__ == "__main__":`` (either operand order)."""
    import ast
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare) or len(node.test.comparators) != 1:
        return False
    sides = [node.test.left, node.test.comparators[0]]
    return isinstance(node.test.ops[0], ast.Eq) and \
        any(isinstance(x, ast.Name) and x.id == "__name__" for x in sides) and \
        any(isinstance(x, ast.Constant) and x.value == "__main__" for x in sides)


class TorchBackend:
    """Yields the batches of one epoch's order (global sample indices) through a DataLoader with ``ctx.workers``.

    Batches for a CUDA device come from pinned memory (asynchronous copies); the loader moves them."""

    def __init__(self, name: str, ctx: BackendContext):
        self.sampler = _EpochBatches(ctx.batch_size)
        self.seed, self.rank = ctx.seed, ctx.rank
        self.dataset = ShardDataset(ctx.samples.refs, ctx.augment, ctx.schema, ctx.seed, ctx.samples.labels,
                                    ctx.transform, uint8=ctx.output == "uint8")
        workers = ctx.workers
        mp_context = worker_context() if workers > 0 else None
        where = unguarded_main_line() if mp_context is not None else None
        if where is not None:
            raise LoaderError(f"{where[0]}:{where[1]}: the torch backend's {workers} worker processes start by "
                              "forkserver once DALI is loaded in this process, and each runs this script's top-level "
                              "code again; put that code under 'if __name__ == \"__main__\":', or pass workers=0")
        # workers end with each epoch's iterator: an abandoned epoch leaves nothing running in the background
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=workers,
                                 collate_fn=collate, pin_memory=ctx.device.type == "cuda",
                                 prefetch_factor=4 if workers > 0 else None,
                                 worker_init_fn=functools.partial(_seed_worker, main_pid=os.getpid()),
                                 generator=torch.Generator(), multiprocessing_context=mp_context)
        self._live = _dead  # the generator of the epoch being read, if any (weak)

    @property
    def pin_memory(self) -> bool:
        """Whether batches come from pinned host memory (for a CUDA device)."""
        return self.loader.pin_memory

    def epoch(self, indices: np.ndarray, epoch: int):
        """Yield ``(images, labels)`` of ``indices``; raises :class:`LoaderError` (one line, naming shard and key)
        for a sample that cannot be loaded, whether it failed in a worker or here."""
        batches = self._batches(indices, epoch)
        self._live = weakref.ref(batches)  # weak: the pass's generator refers to this backend (no cycle)
        return batches

    def _batches(self, indices: np.ndarray, epoch: int):
        self.sampler.indices, self.sampler.epoch = indices, epoch
        self.loader.generator.manual_seed(hash((self.seed, epoch, self.rank)) & 0x7FFFFFFF)  # worker base seeds
        for batch in self.loader:
            if isinstance(batch, _Failed):
                raise LoaderError(batch.message)
            if len(batch) == 4:  # uint8: the HWC buffer as NCHW (channels_last strides, as the DALI backends')
                yield batch[0].permute(0, 3, 1, 2), batch[1], batch[3]
            else:
                yield batch[0], batch[1]

    def close(self) -> None:
        """End a live epoch (its DataLoader iterator, and with it the worker processes, now rather than when the
        pass is dropped) and close the shard descriptors. Idempotent; :meth:`epoch` may run again afterwards."""
        live, self._live = self._live(), _dead
        if live is not None:
            try:
                live.close()
            except ValueError:  # running in another thread: its workers end with that pass
                log.debug("torch backend closed while a batch is being read; workers end with that pass")
        self.dataset.files.close()


def _dead():
    """A weak reference that is already dead (no live epoch)."""
    return None


def _seed_worker(worker_id: int, main_pid: int | None = None) -> None:
    """Seed a worker's numpy and random from torch's per-worker seed; and exit with the loading process even when
    the worker's parent is a forkserver (torch's own watchdog watches the parent, which outlives a killed loader)."""
    if main_pid is not None:
        threading.Thread(target=_exit_with, args=(main_pid,), daemon=True).start()
    _seed_numpy_and_random()


def _exit_with(pid: int) -> None:
    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass


def _seed_numpy_and_random() -> None:
    import random
    s = torch.initial_seed() % 2 ** 32  # DataLoader derives it from the generator + worker id
    random.seed(s)
    np.random.seed(s)
