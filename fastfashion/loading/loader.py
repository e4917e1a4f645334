"""``make_loader()``: exact epochs, per-epoch shuffle, ranks, ``len()``, keys, resume state, over any backend.

Backends are chosen by name (:mod:`fastfashion.loading.backends`): ``dali-gpu``, ``dali-cpu``, ``torch``; ``auto``
takes dali-gpu when CUDA is available, else dali-cpu, else torch, and the log says which and why.

Every backend reads the same order: :func:`fastfashion.loading.order.epoch_indices` of ``(seed, epoch, rank,
world_size)``, so ``len()`` is exact, each sample is delivered exactly once per epoch on exactly one rank (train:
``drop_last``, a different remainder dropped each epoch; val/test: everything, the last batch may be smaller, ranks'
shares may differ by one sample), and keys come from that order (no per-sample metadata through the pipeline).
Epochs survive any outer loop (torchdata's ``StatefulDataLoader`` rules): ``set_epoch(e)`` starts epoch ``e`` at its
first sample (unless :meth:`FashionLoader.load_state_dict` set a position in ``e``); a pass that delivered its last
batch is complete (the loader is then at the next epoch) even if the iterator is never exhausted; and a new
``iter()`` after an abandoned pass (a ``break``, ``limit_train_batches``) starts the next epoch. ``state_dict()``
always holds the exact position of the last pass, so a run stopped mid-epoch resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading

import numpy as np

from ..errors import ConfigError
from ..format.jpeg import MAX_IMAGE_PIXELS
from ..format.reader import ShardReadError
from ..format.spec import MANIFEST
from ..format.verify import file_identity
from ..hardware import available_cpus, bound_to_cpus, resolve_device
from ..remote.store import RemoteConfig
from ..shardset import ShardSet
from .augment import AugmentConfig
from .backends import choose_backend, create_backend
from .base import Backend, BackendContext, Batch, LoaderConfig, LoaderError, auto_output
from .bounds import bound_batch_to_split, check_batch_memory
from .order import DEFAULT_BLOCK, DEFAULT_WINDOW, epoch_indices, num_batches
from .streaming import prepare_remote, stream_pass

log = logging.getLogger(__name__)

__all__ = ["FashionLoader", "make_loader"]


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def _dist(rank, world_size) -> tuple[int, int]:
    """This process's (rank, world size): the arguments where given, else the initialised default process group's,
    else torchrun's ``RANK`` and ``WORLD_SIZE`` (a script that runs under torchrun without
    ``init_process_group``), else rank 0 of 1. Raises ConfigError for ``WORLD_SIZE`` > 1 without ``RANK`` (e.g.
    a loader made in a Lightning DDP child before its process group exists): every rank would read the whole
    split."""
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return (dist.get_rank() if rank is None else int(rank),
                dist.get_world_size() if world_size is None else int(world_size))
    env_rank, env_world = _env_int("RANK"), _env_int("WORLD_SIZE")
    if world_size is None and env_world is not None and env_world > 1 and rank is None and env_rank is None:
        raise ConfigError(f"WORLD_SIZE={env_world} is set but RANK is not, and no process group is initialised: "
                          "make the loader after torch.distributed.init_process_group (with Lightning: in "
                          "setup() or train_dataloader()), or pass rank= and world_size=")
    rank = int(rank) if rank is not None else env_rank if env_rank is not None else 0
    world_size = int(world_size) if world_size is not None else env_world if env_world is not None else 1
    if env_rank is not None or env_world is not None:
        log.debug("rank %d of %d from the environment (RANK=%s, WORLD_SIZE=%s): no process group is initialised",
                  rank, world_size, env_rank, env_world)
    return rank, world_size


STATE_VERSION = 1


def _data_digest(manifest: dict, split: str) -> str:
    """What a split's samples are: the sha256 of its shards' checksums (a loader state is only for these)."""
    shards = [(sh["tar"], sh["sha256"], sh["idx_sha256"]) for sh in manifest["splits"][split]["shards"]]
    return "sha256:" + hashlib.sha256(json.dumps(shards).encode()).hexdigest()


def _identity(path) -> list[int] | None:
    try:
        return file_identity(path)
    except OSError:
        return None


def _device(config: LoaderConfig):
    import torch
    device = resolve_device(config.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # DDP sets it to the local rank
    return device


def _backend_for_transform(backend: str, config: LoaderConfig) -> str:
    """A torchvision transform (a torch module) as ``augment`` runs on the torch backend: chosen for ``auto``,
    refused for a DALI backend asked for by name (a DALI backend takes a function of DALI data nodes)."""
    import torch
    if not isinstance(config.transform, torch.nn.Module) or backend == "torch":
        return backend
    if config.backend == "auto":
        log.info("augment is a torch module (a torchvision transform): using the torch backend")
        return "torch"
    raise TypeError(f"augment is a {type(config.transform).__name__} (a torchvision transform), which only the "
                    f"torch backend runs; backend {backend} takes a function (images, labels) -> images of DALI "
                    "data nodes")


class FashionLoader:
    """An epoch-exact loader over one split of a shard set, configured by a :class:`LoaderConfig`.

    ``shards``: an opened :class:`~fastfashion.shardset.ShardSet` (shared with other loaders of the same set; the
    caller closes it), or a folder or URL, opened here with ``config.remote`` and ``config.verify`` (and closed with
    the loader). Raises :class:`~fastfashion.format.manifest.ManifestError` for a folder that is not a shard set, a
    shard that is missing or not the size the manifest records, or a split the set lacks
    (:class:`~fastfashion.shardset.SplitError`), :class:`LoaderError` for a damaged ``.idx``, ConfigError for a rank
    outside the world size or torchrun's ``WORLD_SIZE`` without ``RANK`` (see :func:`_dist`), RuntimeError when a
    requested backend or device cannot run.
    """

    def __init__(self, shards: ShardSet | str | os.PathLike, config: LoaderConfig = LoaderConfig()):
        self._owns_shards = not isinstance(shards, ShardSet)
        self.shards = ShardSet.open(shards, remote=config.remote, verify=config.verify)
        try:
            self._open(config)
        except BaseException:
            if self._owns_shards:
                self.shards.close()
            raise

    def _open(self, config: LoaderConfig) -> None:
        shards, self.config = self.shards, config
        shards.entry(config.split)
        self.remote, self.url = shards.cache, shards.url
        self.order = prepare_remote(shards, config) if self.remote is not None else config.order or "blocked"
        self.streaming = self.remote is not None and self.order == "windowed"  # tars arrive window by window
        self.shard_dir, self.schema = shards.dir, shards.schema
        try:  # verified unless config.verify or the set's is off; streamed tars are verified as they arrive
            self.samples = shards.samples(config.split, tars=not self.streaming, verify=config.verify,
                                          max_pixels=config.max_image_pixels)
        except ShardReadError as e:
            raise LoaderError(str(e)) from e
        # the manifest and the files verified: checked again before every pass (backends reopen them by path)
        kinds = ("idx",) if self.streaming else ("tar", "idx")
        self._files = {str(p): _identity(p) for p in [self.shard_dir / MANIFEST, *(
            self.shard_dir / sh[k] for sh in shards.shards(config.split) for k in kinds)]}
        self.split, self.batch_size, self.seed = config.split, config.batch_size, config.seed
        self.shuffle = config.is_train_split if config.shuffle is None else bool(config.shuffle)
        self.drop_last = config.is_train_split if config.drop_last is None else bool(config.drop_last)
        self.rank, self.world_size = _dist(config.rank, config.world_size)
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} out of range for world_size {self.world_size}")
        self.augment: AugmentConfig = config.resolved_augment()
        self.with_keys, self.block, self.epoch = config.with_keys, config.block, 0
        # The position (see state_dict): the last pass's, or where the next one starts. A pass that starts after an
        # abandoned one (_live, _delivered > 0) starts the next epoch instead.
        self._start = 0         # samples of self.epoch (all ranks) delivered before the current or next pass
        self._delivered = 0     # batches this rank delivered in the current pass
        self._live = False      # a pass started and did not deliver its last batch (set_epoch supersedes it)
        self._resumed = False   # _start came from load_state_dict and no pass has started since
        self._data_digest = _data_digest(shards.manifest, config.split)
        self.num_samples = len(self.indices(0))
        bounded = bound_batch_to_split(self.batch_size, self.num_samples, drop_last=self.drop_last,
                                       where=f"{shards} split {self.split!r}")
        if bounded != self.batch_size:  # the same samples in fewer, whole batches: no memory for empty slots
            self.batch_size = bounded
            self.num_samples = len(self.indices(0))
        if self.num_samples == 0:
            log.warning("%s split %r: rank %d of %d gets no sample (batch_size %d, drop_last %s)", self.shard_dir,
                        self.split, self.rank, self.world_size, self.batch_size, self.drop_last)
        self.device = _device(config)
        self.backend = choose_backend(config.backend, self.device, config.gpu_cache)
        self.backend = _backend_for_transform(self.backend, config)
        self.workers = bound_to_cpus("workers", min(4, available_cpus()) if config.workers is None else config.workers,
                                   "DataLoader worker processes of the torch backend")
        self.dali_threads = None if config.dali_threads is None else bound_to_cpus(
            "dali_threads", config.dali_threads, "DALI CPU threads per pipeline")
        # a batch never holds more than this rank's samples (train with drop_last and a larger batch: none at all)
        check_batch_memory(min(self.batch_size, self.num_samples), self.augment.image_size, self.backend,
                           self.workers if self.backend == "torch" else 0, where=f"{shards} split {self.split!r}")
        self._backend: Backend | None = None
        self._generation = 0  # bumped by every iter(): only the newest iterator may run
        self._lock = threading.Lock()  # one batch at a time, whatever the thread

    # --- order -------------------------------------------------------------------------------------------
    def indices(self, epoch: int, start: int = 0) -> np.ndarray:
        """Global sample indices this rank delivers in ``epoch``, in delivery order."""
        return epoch_indices(self.samples.sizes, epoch=epoch, start=start, **self._order_params())

    def _order_params(self) -> dict:
        """What the order depends on besides the epoch (:func:`~fastfashion.loading.order.epoch_indices`)."""
        return dict(seed=self.seed, shuffle=self.shuffle, rank=self.rank, world_size=self.world_size,
                    batch_size=self.batch_size, drop_last=self.drop_last, block=self.block,
                    window=self.config.window if self.order == "windowed" else None)

    @property
    def _order_name(self) -> str:
        return f"windowed:{self.config.window}" if self.order == "windowed" else "blocked"

    def __len__(self) -> int:
        return num_batches(self.num_samples, self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        """The next pass delivers ``epoch`` (order = f(seed, epoch)) from its first sample, whatever the passes
        before it did; or, right after :meth:`load_state_dict` of a state in ``epoch``, from that position. A pass
        in progress (started, its last batch not delivered) ends: its iterator raises :class:`LoaderError`. An
        iterator made but not read yet is not a pass in progress: it delivers ``epoch`` (so ``set_epoch`` in a
        framework's epoch-start hook applies)."""
        epoch = int(epoch)
        with self._lock:
            if self._live:
                self._generation += 1
            if not (self._resumed and epoch == self.epoch):
                self._start, self._resumed = 0, False
            self.epoch, self._delivered, self._live = epoch, 0, False

    def set_image_size(self, image_size: int | tuple[int, int]) -> None:
        """Deliver images of ``image_size`` from the next pass on (progressive resizing: the trainer grows the size
        between epochs). The order and the augmentation's random draws do not change; the backend is rebuilt for the
        new size, which ends a live iterator (as :meth:`close` does)."""
        augment = dataclasses.replace(self.augment, image_size=image_size)  # validates the size
        if augment == self.augment:
            return
        self.close()
        self.augment = augment
        log.debug("%s split %r: image size now %s", self.shard_dir, self.split, image_size)

    def state_dict(self) -> dict:
        """Where this loader stands, as plain JSON values (torchdata's ``Stateful`` protocol): the epoch, the samples
        of it all ranks delivered (``consumed``: a prefix of the epoch's order, see :mod:`.order`), and what the
        order depends on. :meth:`load_state_dict` on a loader of the same data continues from there, on any number
        of ranks. Taken during a pass (or after one was abandoned), it is that pass's exact position: a new loader
        loaded with it delivers the batches that pass would have delivered next. After a pass delivered its last
        batch it is the next epoch at 0."""
        consumed = self._start + self._delivered * self.batch_size * self.world_size if self.drop_last else 0
        return {"version": STATE_VERSION, "epoch": self.epoch, "consumed": consumed, "seed": self.seed,
                "world_size": self.world_size, "batch_size": self.batch_size, "shuffle": self.shuffle,
                "drop_last": self.drop_last, "block": self.block, "split": self.split, "order": self._order_name,
                "num_samples": len(self.samples.refs), "data": self._data_digest}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s position: the next batch is the one an uninterrupted loader would
        deliver (same samples; same augmentation, a function of (seed, epoch, sample)). Raises ValueError naming
        both values when the state belongs to other data or another order."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ConfigError(f"not a loader state of version {STATE_VERSION}: {state!r:.200}")
        mine = self.state_dict()
        if self.order == "windowed" and state.get("world_size") != self.world_size:
            raise ConfigError(f"the loader state is for world_size {state.get('world_size')!r}, this loader has "
                             f"{self.world_size} (the windowed order resumes on the same number of ranks)")
        for key in ("data", "split", "num_samples", "seed", "batch_size", "shuffle", "drop_last", "block", "order"):
            if state.get(key, "blocked" if key == "order" else None) != mine[key]:
                raise ConfigError(f"the loader state is for {key} {state.get(key)!r}, this loader has {mine[key]!r}")
        consumed = state.get("consumed")
        if not isinstance(consumed, int) or consumed < 0 or consumed % self.batch_size or \
                consumed > len(self.samples.refs):
            raise ConfigError(f"the loader state's position {consumed!r} is not a whole number of batches of the "
                             f"split's {len(self.samples.refs)} samples")
        with self._lock:
            if self._live:  # a pass in progress ends, as with set_epoch
                self._generation += 1
            self.epoch, self._start, self._delivered = int(state["epoch"]), consumed, 0
            self._live, self._resumed = False, True

    def keys(self, epoch: int | None = None) -> list[str]:
        """Sample keys of an epoch on this rank, in delivery order (what ``with_keys`` yields, batch by batch)."""
        return [self.samples.refs[i].key for i in self.indices(self.epoch if epoch is None else epoch)]

    # --- iteration ---------------------------------------------------------------------------------------
    def backend_context(self, **overrides) -> BackendContext:
        """What this loader's backend is built from (``overrides``: fields of :class:`BackendContext`)."""
        workers = self.workers  # bounded by the CPUs (bounds.py)
        # indices() as a function of the order's parameters, not the bound method: the backend the loader holds
        # then keeps no reference back to it (a cycle keeps pipelines and file mappings until a gc run)
        sizes, params = self.samples.sizes, self._order_params()

        def order_of(epoch: int) -> np.ndarray:
            return epoch_indices(sizes, epoch=epoch, **params)

        ctx = BackendContext(samples=self.samples, augment=self.augment, batch_size=self.batch_size, seed=self.seed,
                             rank=self.rank, device=self.device, workers=workers, schema=self.schema,
                             order_of=order_of, gpu_cache=self.config.gpu_cache, world_size=self.world_size,
                             dali_threads=self.dali_threads, transform=self.config.transform,
                             hw_decoder_load=self.config.hw_decoder_load, output=self.output)
        return dataclasses.replace(ctx, **overrides)

    @property
    def output(self) -> str:
        """What the batches hold: ``float`` or ``uint8`` (``output="auto"`` resolved for this backend and device:
        :func:`~fastfashion.loading.base.auto_output`)."""
        if self.config.output != "auto":
            return self.config.output
        return auto_output(self.backend, self.device.type, self.config.transform is not None)

    @property
    def active_backend(self) -> Backend | None:
        """The backend object once iteration started (None before, and after :meth:`close`)."""
        return self._backend

    def __iter__(self):
        """A pass over an epoch, decided when its first batch is asked for: the epoch :meth:`set_epoch` chose (or
        :meth:`load_state_dict`'s position in it); else after a complete pass the next epoch; after an abandoned
        pass (one that delivered some batches but not its last: a ``break``, a framework's batch limit) also the
        next epoch, from its first sample. A pass is complete once it delivered its last batch (``len()`` batches
        from the epoch's start), even if the iterator is never exhausted. It supersedes any earlier iterator of
        this loader: using that one again raises :class:`LoaderError` (the backend, a DALI pipeline, serves one
        pass at a time)."""
        with self._lock:
            self._generation += 1
            return _Pass(self._pass(self._generation))

    def _check_current(self, generation: int) -> None:
        if generation != self._generation:
            raise LoaderError(f"{self.shard_dir} split {self.split!r}: this iterator was superseded by a newer iter() "
                              "on the same loader or by close() (one pass at a time per loader; make a second loader "
                              "to read twice)")

    def _check_files(self) -> None:
        """The manifest and every shard file are the ones of when the loader was made (a replaced set, a changed
        file)."""
        for path, identity in self._files.items():
            if _identity(path) == identity:
                continue
            if path.endswith(MANIFEST):
                raise LoaderError(f"{self.shard_dir}: the shard set was replaced or changed since this loader was "
                                  "made (manifest.json differs); make a new loader")
            raise LoaderError(f"{path}: changed since this loader verified it; make a new loader")

    def _next_batch(self, batches, generation: int):
        """The backend's next ``(images, labels)`` (None at the end), one thread at a time, for the newest pass."""
        with self._lock:
            self._check_current(generation)
            return next(batches, None)

    def _pass(self, generation: int):
        with self._lock:
            self._check_current(generation)
            if self._live and self._delivered:  # after an abandoned pass: the next epoch, from its start
                self.epoch, self._start = self.epoch + 1, 0
            self._delivered, self._live, self._resumed = 0, True, False
            epoch, start = self.epoch, self._start
        indices = self.indices(epoch, start)
        with self._lock:
            self._check_current(generation)
            self._check_files()
            if self._backend is None:  # streamed: one DALI pipeline per segment, not per epochs ahead
                self._backend = create_backend(self.backend, self.backend_context(
                    **({"horizon": 1} if self.streaming else {})))
            batches = stream_pass(self._backend, self.shards, self.split, self.samples, self.schema, indices, epoch,
                                  batch_size=self.batch_size, window=self.config.window,
                                  then=self.indices(epoch + 1), owner=self) if self.streaming else \
                self._backend.epoch(indices, epoch)
        a = 0
        if len(indices) == 0:  # nothing to deliver (a rank without samples, a resumed epoch's end)
            self._complete(generation, epoch)
        while (out := self._next_batch(batches, generation)) is not None:
            images, labels, *rest = out
            colour = rest[0] if rest else None
            k = len(labels)
            keys = [self.samples.refs[i].key for i in indices[a:a + k]] if self.with_keys else None
            a += k
            if images.device != self.device:
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
            if colour is not None and colour.device != self.device:
                colour = colour.to(self.device, non_blocking=True)
            with self._lock:
                self._check_current(generation)
                self._delivered += 1
            if a >= len(indices):  # the last batch: the pass is complete before it is handed out
                # the backend runs to its end now, not when (if ever) the caller asks past len(): a DALI pipeline
                # then knows it may serve the next epoch (Lightning and zip(range(len(L)), L) never ask)
                if a > len(indices) or self._next_batch(batches, generation) is not None:
                    raise LoaderError(f"{self.shard_dir} split {self.split!r}: backend {self.backend} delivered more "
                                      f"than the pass's {len(indices)} samples")
                self._complete(generation, epoch)
                yield Batch(images, labels, keys, colour)
                return
            yield Batch(images, labels, keys, colour)
        if a != len(indices):
            raise LoaderError(f"{self.shard_dir} split {self.split!r}: backend {self.backend} delivered {a} of "
                              f"{len(indices)} samples")

    def _complete(self, generation: int, epoch: int) -> None:
        """The pass of ``epoch`` delivered its last batch: the loader is at the next epoch's start."""
        with self._lock:
            if generation == self._generation and self._live:
                self.epoch, self._start, self._delivered, self._live = epoch + 1, 0, 0, False

    def close(self) -> None:
        """Release the backend (pipelines, workers, open files, temporary files) and, when the loader opened its
        shard set itself, the set's download threads; a live iterator then raises LoaderError. Idempotent; iterating
        again afterwards builds a new backend. ``with`` calls it on exit."""
        with self._lock:
            self._generation += 1
            if self._backend is not None:
                self._backend.close()
            self._backend = None
            if self.remote is not None:
                self.remote.unpin(self)
            if self._owns_shards:
                self.shards.close()

    def __repr__(self) -> str:
        return (f"FashionLoader({str(self.shard_dir)!r}, split={self.split!r}, backend={self.backend!r}, "
                f"device={str(self.device)!r}, batches={len(self)}, rank={self.rank}/{self.world_size})")

    # --- lifecycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> FashionLoader:
        return self

    def __exit__(self, *exc) -> None:
        """:meth:`close` on leaving ``with make_loader(...) as loader:``."""
        self.close()


class _Pass:
    """One pass of a loader: refuses, with a clear error, to be read by two threads at once (a generator would
    raise "generator already executing")."""

    def __init__(self, batches):
        self._batches, self._lock = batches, threading.Lock()

    def __iter__(self) -> _Pass:
        return self

    def __next__(self) -> Batch:
        if not self._lock.acquire(blocking=False):
            raise LoaderError("this iterator is being read by another thread; give each thread its own iter() "
                              "(or its own loader)")
        try:
            return next(self._batches)
        finally:
            self._lock.release()

    def close(self) -> None:
        self._batches.close()


def make_loader(shards: ShardSet | str | os.PathLike, split: str = "train", batch_size: int = 64, backend: str = "auto",
                device="auto", augment=None, shuffle: bool | None = None,
                image_size: int | tuple[int, int] = 224, seed: int = 0, rank: int | None = None,
                world_size: int | None = None,
                with_keys: bool = False, drop_last: bool | None = None, *, workers: int | None = None,
                block: int = DEFAULT_BLOCK, gpu_cache: bool | None = None,
                dali_threads: int | None = None, verify: bool = True, order: str | None = None,
                window: int = DEFAULT_WINDOW, storage_options: dict | None = None, cache_dir=None,
                cache_limit: int | None = None, offline: bool = False,
                remote: RemoteConfig | None = None, max_image_pixels: int = MAX_IMAGE_PIXELS,
                output: str = "float") -> FashionLoader:
    """An epoch-exact loader over ``split`` of a shard set: ``FashionLoader(shards, LoaderConfig(...))``.

    ``shards`` is an opened :class:`~fastfashion.shardset.ShardSet`, a local folder or any fsspec URL (``s3://``,
    ``gs://``, ``https://``, ``file://``); a URL is read through its verified local cache
    (:mod:`fastfashion.loading.streaming`). Every argument is a field of
    :class:`LoaderConfig` (which documents them); ``storage_options``, ``cache_dir``, ``cache_limit`` and
    ``offline`` are fields of its ``remote`` :class:`~fastfashion.remote.store.RemoteConfig` (pass ``remote`` for
    retries and timeouts). ``backend`` is one of ``auto``, ``dali``, ``dali-gpu``, ``dali-cpu``, ``torch``.
    Raises what :class:`FashionLoader` and :class:`LoaderConfig` raise.
    """
    remote = dataclasses.replace(remote or RemoteConfig(), **{k: v for k, v in (
        ("storage_options", storage_options), ("cache_dir", cache_dir), ("cache_limit", cache_limit),
        ("offline", offline or None)) if v is not None})
    return FashionLoader(shards, LoaderConfig(
        split=split, batch_size=batch_size, backend=backend, device=device, augment=augment, shuffle=shuffle,
        image_size=image_size, seed=seed, rank=rank, world_size=world_size, with_keys=with_keys,
        drop_last=drop_last, workers=workers, block=block, gpu_cache=gpu_cache, dali_threads=dali_threads,
        verify=verify, order=order, window=window, remote=remote, max_image_pixels=max_image_pixels,
        output=output))
