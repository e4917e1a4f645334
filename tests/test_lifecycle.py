"""A loader's lifecycle: ``close()`` and ``with`` release what a pass holds, a dropped loader is freed by reference
counting alone (no cycle keeps its pipeline or file mappings alive), and a shard set re-written in place is read
afresh (the DALI backend keys its files by content, not path).

Real components on tiny data: solid-colour images whose mean colour names what was read.
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import weakref

import numpy as np
import pytest
import torch
from helpers import needs_dali
from PIL import Image

from fastfashion.data.shard import ShardConfig, write_shards
from fastfashion.format.manifest import read_manifest
from fastfashion.format.reader import read_split_samples
from fastfashion.loading.augment import IMAGENET_MEAN, IMAGENET_STD
from fastfashion.loading.base import LoaderConfig, LoaderError
from fastfashion.loading.loader import FashionLoader, make_loader
from fastfashion.schema import FASHION_SCHEMA

BACKENDS = [pytest.param("dali-cpu", marks=needs_dali), "torch"]
PALETTE = [(230, 30, 30), (30, 230, 30), (30, 30, 230), (230, 230, 30), (30, 230, 230), (230, 30, 230),
           (230, 230, 230), (30, 30, 30)]
N = len(PALETTE)  # samples per split


def write_source(root, colours) -> None:
    """A FashionDataset-layout source whose sample ``k`` of every split is a solid ``colours[k]`` image."""
    (root / "img").mkdir(parents=True)
    (root / "split").mkdir()
    (root / "split" / "list_attr_cloth.txt").write_text(FASHION_SCHEMA.to_list_attr_cloth())
    labels = " ".join("0" for _ in FASHION_SCHEMA.num_classes)
    for split in ("train", "val", "test"):
        paths = []
        for k, c in enumerate(colours):
            name = f"img/{split}{k:02d}.jpg"
            Image.new("RGB", (40 + 3 * k, 48), c).save(root / name, quality=95)
            paths.append(name)
        (root / "split" / f"{split}.txt").write_text("\n".join(paths) + "\n")
        if split != "test":
            (root / "split" / f"{split}_attr.txt").write_text("\n".join([labels] * len(paths)) + "\n")


def shard(src, out, *, overwrite: bool = False) -> None:
    write_shards(src, out, ShardConfig(samples_per_shard=4, workers=1, overwrite=overwrite))


def mean_colours(images: torch.Tensor) -> np.ndarray:
    """[B, 3] mean RGB (0-255) of normalized images."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((images.float().cpu() * std + mean) * 255).mean(dim=(2, 3)).numpy()


def colours_by_key(loader) -> dict[str, np.ndarray]:
    out = {}
    for b in loader:
        out.update(zip(b.keys, mean_colours(b.images)))
    return out


def assert_colours(got: dict[str, np.ndarray], colours) -> None:
    assert sorted(got) == [f"val{k:02d}" for k in range(N)]
    for key, rgb in got.items():
        want = np.array(colours[int(key[3:])], dtype=np.float32)
        assert np.abs(rgb - want).max() < 12, f"{key}: mean colour {rgb.round()} is not {want}"


@pytest.fixture
def shard_set(tmp_path):
    write_source(tmp_path / "a", PALETTE)
    shard(tmp_path / "a", tmp_path / "shards")
    return tmp_path / "shards"


def held(shard_dir) -> set[str]:
    """Files of ``shard_dir`` this process has mapped (DALI's reader) or open (the torch backend's descriptors)."""
    prefix = os.path.realpath(shard_dir) + os.sep
    with open("/proc/self/maps") as f:
        found = {line.split()[-1] for line in f if prefix in line}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed meanwhile
            continue
    return {f for f in found if f.startswith(prefix)}


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")


def loader_of(shards, backend, **kw):
    return make_loader(shards, "val", batch_size=4, backend=backend, device="cpu", augment=False, image_size=16,
                       with_keys=True, workers=0, **kw)


# --- content keys ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("close_first", [False, True])
def test_reshard_in_place_is_read_afresh(tmp_path, shard_set, backend, close_first):
    """Re-writing a set in place (``shard --overwrite`` replaces the folder) and opening it again in the same
    process delivers the new pixels, whether or not the first loader is still alive."""
    first = loader_of(shard_set, backend)
    assert_colours(colours_by_key(first), PALETTE)
    if close_first:
        first.close()
    swapped = PALETTE[::-1]
    write_source(tmp_path / "b", swapped)
    shard(tmp_path / "b", shard_set, overwrite=True)
    with loader_of(shard_set, backend) as second:
        assert_colours(colours_by_key(second), swapped)
    with pytest.raises(LoaderError, match="replaced or changed"):  # the first loader refuses the new set
        list(first)


def test_split_samples_carry_shard_sha256(shard_set):
    manifest = read_manifest(shard_set)
    samples = read_split_samples(shard_set, manifest, "val", FASHION_SCHEMA)
    assert samples.shard_sha256 == [sh["sha256"] for sh in manifest["splits"]["val"]["shards"]]
    assert len(samples.shard_sha256) == len(samples.shards) == 2


@needs_dali
def test_dali_reads_through_content_named_links(shard_set):
    """The DALI reader is given ``{sha256}.tar`` links to the shards: a new tar is a new path to DALI."""
    manifest = read_manifest(shard_set)
    with loader_of(shard_set, "dali-cpu") as loader:
        next(iter(loader))
        paths = loader.active_backend.reader_paths
    shas = {sh["sha256"]: shard_set / sh["tar"] for sh in manifest["splits"]["val"]["shards"]}
    assert {os.path.basename(p) for p in paths} == {f"{s}.tar" for s in shas}
    for p in paths:
        assert os.path.realpath(p) == os.path.realpath(shas[os.path.basename(p)[:-4]])


# --- close() and with ----------------------------------------------------------------------------------------------
@needs_proc
@pytest.mark.parametrize("backend", BACKENDS)
def test_with_closes_and_close_is_idempotent(shard_set, backend):
    """Leaving ``with`` unmaps and closes the shards, drops the pipeline and its index files, although an iterator
    of the pass is still referenced; close() again does nothing; the loader iterates again afterwards."""
    with FashionLoader(shard_set, LoaderConfig(split="val", batch_size=4, backend=backend, device="cpu",
                                               augment=False, image_size=16, with_keys=True, workers=0)) as loader:
        it = iter(loader)
        next(it)
        live = loader.active_backend
        assert live is not None
        assert held(shard_set)
        if backend == "dali-cpu":
            index_dir, pipe = live._dir, weakref.ref(live._pipe)
            assert os.listdir(index_dir)  # this pass's index files
    assert loader.active_backend is None
    assert not held(shard_set)
    if backend == "dali-cpu":
        assert pipe() is None and not os.path.exists(index_dir)
    with pytest.raises(LoaderError, match="superseded"):
        next(it)
    loader.close()  # again: nothing to do
    loader.close()
    assert_colours(colours_by_key(loader), PALETTE)  # a closed loader iterates again, on a new backend
    loader.close()


def test_torch_close_stops_live_workers(shard_set):
    """close() in the middle of a pass ends the DataLoader's worker processes, not when the iterator is dropped."""
    loader = make_loader(shard_set, "val", batch_size=2, backend="torch", device="cpu", augment=False,
                         image_size=16, workers=1)
    before = set(multiprocessing.active_children())
    it = iter(loader)
    next(it)
    workers = set(multiprocessing.active_children()) - before
    assert workers and all(w.is_alive() for w in workers)
    loader.close()
    for w in workers:
        w.join(timeout=10)
    assert not any(w.is_alive() for w in workers)
    del it


# --- no reference cycle ------------------------------------------------------------------------------------------
@pytest.fixture
def no_gc():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@needs_proc
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("close", [False, True])
def test_dropped_loader_is_freed_without_gc(shard_set, no_gc, backend, close):
    """A loader dropped after a batch (closed or not) is freed by reference counting alone, and its pipeline and
    shard mappings with it."""
    loader = loader_of(shard_set, backend)
    batch = next(iter(loader))  # the pass is dropped right away: a suspended generator, released by refcount
    assert len(batch.keys) == 4
    ref, backend_ref = weakref.ref(loader), weakref.ref(loader.active_backend)
    pipe_ref = weakref.ref(loader.active_backend._pipe) if backend == "dali-cpu" else None
    if close:
        loader.close()
        assert backend_ref() is None and (pipe_ref is None or pipe_ref() is None)
    del loader, batch
    assert ref() is None, gc.get_referrers(ref())
    assert backend_ref() is None
    assert pipe_ref is None or pipe_ref() is None
    assert not held(shard_set)


@pytest.mark.parametrize("order", ["blocked", "windowed"])
def test_order_of_is_the_loaders_order(shard_set, no_gc, order):
    """The backend's ``order_of`` is the loader's order, epoch for epoch, and holds no reference to the loader."""
    loader = make_loader(shard_set, "train", batch_size=2, backend="torch", device="cpu", seed=3, block=2,
                         order=order, window=1)
    order_of = loader.backend_context().order_of
    want = [loader.indices(e).tolist() for e in range(4)]
    assert want[0] != want[1]
    ref = weakref.ref(loader)
    del loader
    assert ref() is None
    assert [order_of(e).tolist() for e in range(4)] == want
