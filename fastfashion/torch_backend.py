"""The portable CPU path (torchvision over the shards, in a DataLoader with workers) and the seed-style baseline.

* :class:`ShardDataset` — map-style access to the samples of a split's WebDataset shards: each sample's ``.jpg``
  and ``.lbl`` members are read by byte offset (from the ``.idx`` files) and decoded with ``torchvision.io``. Random
  access is what lets this backend deliver exactly the order of :mod:`fastfashion.order` (the same as the DALI
  backend, sample for sample) with any number of workers; a streaming ``webdataset.WebDataset`` reads shards
  front to back and cannot. The tars stay plain WebDataset shards that the webdataset library reads as well.
* :func:`make_seed_loader` — the seed report's loader, kept for benchmarks: PIL + torchvision transforms in a
  map-style Dataset over the raw folder (``split/X.txt`` + ``X_attr.txt``).
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .augment import AugmentConfig
from .loader import Batch, LoaderError, SampleRef
from .schema import FASHION_SCHEMA, Schema

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

    def __init__(self, refs: Sequence[SampleRef], cfg: AugmentConfig):
        self.refs, self.cfg = list(refs), cfg
        self.transform = torchvision_transform(cfg)
        self._files: dict[str, int] = {}  # per worker process: opened lazily, after the fork

    def __len__(self) -> int:
        return len(self.refs)

    def _read(self, path: str, offset: int, size: int) -> bytes:
        fd = self._files.get(path)
        if fd is None:
            fd = self._files[path] = os.open(path, os.O_RDONLY)
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise OSError(f"short read ({len(data)} of {size} bytes at offset {offset})")
        return data

    def __getitem__(self, i: int):
        from PIL import Image
        r = self.refs[i]
        try:
            jpg = self._read(r.tar, r.jpg_offset, r.jpg_size)
            lbl = np.frombuffer(self._read(r.tar, r.lbl_offset, r.lbl_size), dtype="<i8")
            with Image.open(io.BytesIO(jpg)) as im:
                img = im.convert("RGB")
        except (OSError, RuntimeError, ValueError) as e:
            raise LoaderError(f"{r.tar}: sample {r.key!r}: {e}") from e
        return self.transform(img), torch.from_numpy(lbl.astype(np.int64)), r.key

    def __del__(self):
        for fd in getattr(self, "_files", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass


class _EpochBatches:
    """A batch sampler whose batches the loader replaces each epoch."""

    def __init__(self, batch_size: int):
        self.batch_size, self.indices = batch_size, np.zeros(0, dtype=np.int64)

    def __iter__(self):
        for a in range(0, len(self.indices), self.batch_size):
            yield self.indices[a:a + self.batch_size].tolist()

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)


def _collate(samples) -> Batch:
    images, labels, keys = zip(*samples)
    return Batch(torch.stack(images), torch.stack(labels), list(keys))


class TorchShardReader:
    """Yields the batches of one epoch's order (global sample indices) through a DataLoader with ``workers``."""

    def __init__(self, refs: Sequence[SampleRef], cfg: AugmentConfig, *, batch_size: int, workers: int, seed: int,
                 rank: int = 0):
        self.sampler = _EpochBatches(batch_size)
        self.seed, self.rank = seed, rank
        self.dataset = ShardDataset(refs, cfg)
        # workers end with each epoch's iterator: an abandoned epoch leaves nothing running in the background
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=workers,
                                 collate_fn=_collate,
                                 prefetch_factor=4 if workers > 0 else None,
                                 worker_init_fn=_seed_worker, generator=torch.Generator())

    def epoch(self, indices: np.ndarray, epoch: int):
        self.sampler.indices = indices
        # worker RNG seeds from (seed, epoch, rank): with workers, augmentation is a function of those
        self.loader.generator.manual_seed(hash((self.seed, epoch, self.rank)) & 0x7FFFFFFF)
        return iter(self.loader)


def _seed_worker(worker_id: int) -> None:
    import random
    s = torch.initial_seed() % 2 ** 32  # DataLoader derives it from the generator + worker id
    random.seed(s)
    np.random.seed(s)


# --- the seed-style baseline (raw folder, PIL) -------------------------------------------------------------

def seed_transforms(image_size: int, augment: bool):
    """The seed report's torchvision transforms (PIL in, normalized float tensor out)."""
    from torchvision import transforms as T
    cfg = AugmentConfig(image_size=image_size)
    if augment:
        ops = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.RandomRotation(cfg.rotation),
               T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)]
    else:
        ops = [T.Resize(cfg.eval_resize), T.CenterCrop(image_size)]
    return T.Compose(ops + [T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])


class SeedFolderDataset(Dataset):
    """The seed's map-style Dataset: ``split/X.txt`` image paths + ``X_attr.txt`` labels, PIL decode."""

    def __init__(self, src_dir: str | os.PathLike, split: str, transform=None, schema: Schema = FASHION_SCHEMA):
        from .source import read_split
        self.root = Path(src_dir)
        self.records = read_split(self.root, split, schema, check_images=False)
        self.transform, self.width = transform, len(schema)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        from PIL import Image
        r = self.records[i]
        with Image.open(self.root / r.path) as im:
            img = im.convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        labels = torch.tensor(r.labels if r.labels is not None else [-1] * self.width, dtype=torch.int64)
        return img, labels, r.key


def make_seed_loader(src_dir: str | os.PathLike, split: str = "train", *, batch_size: int = 64,
                     image_size: int = 224, workers: int = 2, augment: bool = True) -> DataLoader:
    """The seed-style baseline loader over the raw folder; yields :class:`~fastfashion.loader.Batch`."""
    ds = SeedFolderDataset(src_dir, split, seed_transforms(image_size, augment))
    return DataLoader(ds, batch_size=batch_size, shuffle=augment, num_workers=workers, collate_fn=_collate,
                      drop_last=augment)
