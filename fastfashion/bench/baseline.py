"""The seed-style baseline that ``fastfashion bench`` compares against: the seed report's loader, PIL + torchvision
transforms in a map-style Dataset over the raw folder (``split/X.txt`` + ``X_attr.txt``), in a DataLoader.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.source import read_split
from ..format.spec import TRAIN
from ..loading.augment import AugmentConfig
from ..loading.backends.torch import worker_context
from ..loading.base import Batch
from ..schema import Schema


def baseline_transforms(image_size: int | tuple[int, int], augment: bool):
    """The seed report's torchvision transforms (PIL in, normalized float tensor out)."""
    from torchvision import transforms as T
    cfg = AugmentConfig(image_size=image_size)
    if augment:
        ops = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.RandomRotation(cfg.rotation),
               T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)]
    else:
        ops = [T.Resize(cfg.eval_resize), T.CenterCrop(image_size)]
    return T.Compose(ops + [T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])


class BaselineFolderDataset(Dataset):
    """The seed's map-style Dataset: ``split/X.txt`` image paths + ``X_attr.txt`` labels, PIL decode."""

    def __init__(self, src_dir: str | os.PathLike, split: str, schema: Schema, transform=None):
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


def _collate(samples) -> Batch:
    images, labels, keys = zip(*samples)
    return Batch(torch.stack(images), torch.stack(labels), list(keys))


def make_baseline_loader(src_dir: str | os.PathLike, schema: Schema, split: str = TRAIN, *, batch_size: int = 64,
                         image_size: int | tuple[int, int] = 224, workers: int = 2, augment: bool = True) -> DataLoader:
    """The seed-style baseline loader over the raw folder; yields :class:`~fastfashion.loading.base.Batch`."""
    ds = BaselineFolderDataset(src_dir, split, schema, baseline_transforms(image_size, augment))
    return DataLoader(ds, batch_size=batch_size, shuffle=augment, num_workers=workers, collate_fn=_collate,
                      drop_last=augment, multiprocessing_context=worker_context() if workers > 0 else None)
