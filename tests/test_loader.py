"""make_loader on tiny shards: pixel/key/label alignment, exact epochs across ranks, backends agreeing, failures.

The train and val images are solid colours that encode their index (FFCV's trick): decoding a batch and mapping
each image's mean colour back to an index proves images, labels and keys travel together. The test split holds
smooth gradients, for comparing the eval outputs of DALI-CPU and torch. Tests that need DALI skip without it;
the torch-backend tests always run (that backend is the one for machines without DALI).
"""
from __future__ import annotations

import builtins
import io
import logging
import os
import re
import shutil
import tarfile

import numpy as np
import pytest
import torch
from helpers import make_dataset, needs_dali
from PIL import Image

from fastfashion.data.shard import ShardConfig, write_shards
from fastfashion.format.manifest import ManifestError, read_manifest
from fastfashion.format.reader import ShardFiles
from fastfashion.loading.augment import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig
from fastfashion.loading.backends import create_backend
from fastfashion.loading.backends.dali import (
    CACHE_FRACTION,
    FORCED_CACHE_FRACTION,
    decoder_cache_mb,
)
from fastfashion.loading.base import LoaderError
from fastfashion.loading.loader import make_loader
from fastfashion.schema import FASHION_SCHEMA

N_TRAIN, N_VAL, N_TEST = 29, 11, 7
BACKENDS = [pytest.param("dali", "cpu", marks=needs_dali), ("torch", "cpu")]


def colour(k: int) -> tuple[int, int, int]:
    """64 colours 60 levels apart: index k survives JPEG and resampling."""
    return 30 + 60 * (k % 4), 30 + 60 * (k // 4 % 4), 30 + 60 * (k // 16 % 4)


def labels_of(k: int) -> list[int]:
    return [(k + j) % n for j, n in enumerate(FASHION_SCHEMA.num_classes)]


def write_source(root, n_train=N_TRAIN, n_val=N_VAL, n_test=N_TEST):
    (root / "img").mkdir(parents=True)
    (root / "split").mkdir()
    (root / "split" / "list_attr_cloth.txt").write_text(FASHION_SCHEMA.to_list_attr_cloth())
    rng = np.random.default_rng(0)
    k = 0
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        paths, labels = [], []
        for _ in range(n):
            w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            if split == "test":  # smooth gradients: decoders agree up to rounding
                y, x = np.mgrid[0:h, 0:w]
                arr = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h) + 64], -1).astype(np.uint8)
                im = Image.fromarray(arr)
            else:
                im = Image.new("RGB", (w, h), colour(k))
            im.save(root / "img" / f"{k:05d}.jpg", quality=95)
            paths.append(f"img/{k:05d}.jpg")
            labels.append(" ".join(map(str, labels_of(k))))
            k += 1
        (root / "split" / f"{split}.txt").write_text("\n".join(paths) + "\n")
        if split != "test":
            (root / "split" / f"{split}_attr.txt").write_text("\n".join(labels) + "\n")
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    write_source(root / "src")
    write_shards(root / "src", root / "shards", ShardConfig(samples_per_shard=4, workers=1, seed=0))
    return root / "shards"


def decode_index(images: torch.Tensor) -> list[int]:
    """Mean colour of each normalized image -> the index whose colour is nearest."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = ((images.float().cpu() * std + mean) * 255).mean(dim=(2, 3))
    table = torch.tensor([colour(k) for k in range(64)], dtype=torch.float32)
    return torch.cdist(rgb, table).argmin(dim=1).tolist()


def run(loader):
    out = list(loader)
    assert len(out) == len(loader)
    return out


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("split", ["train", "val"])
def test_pixels_keys_labels_aligned(shards, backend, device, split):
    loader = make_loader(shards, split, batch_size=4, backend=backend, device=device, augment=False,
                         with_keys=True, image_size=32, workers=0)
    assert loader.backend == ("dali-cpu" if backend == "dali" else "torch")
    keys = []
    for b in run(loader):
        assert b.images.shape[1:] == (3, 32, 32) and b.images.dtype == torch.float32
        assert b.labels.dtype == torch.int64 and b.labels.shape == (len(b.keys), 6)
        idx = decode_index(b.images)
        assert [f"{k:05d}" for k in idx] == b.keys
        assert b.labels.tolist() == [labels_of(k) for k in idx]
        keys += b.keys
    assert keys == loader.keys(0)
    if split == "val":
        assert keys == [f"{k:05d}" for k in range(N_TRAIN, N_TRAIN + N_VAL)]


@needs_dali
def test_train_geometry_keeps_alignment(shards):
    """Random crop + flip + resize (one warp) keeps a solid colour; colour jitter and rotation off."""
    cfg = AugmentConfig.train(brightness=0, contrast=0, saturation=0, hue=0, rotation=0)
    loader = make_loader(shards, "train", batch_size=4, backend="dali", device="cpu", augment=cfg,
                         with_keys=True, image_size=24)
    for b in run(loader):
        assert [f"{k:05d}" for k in decode_index(b.images)] == b.keys


@needs_dali
@pytest.mark.parametrize("split", ["train", "val"])
def test_full_decode_crop_box_path_keeps_alignment(shards, split):
    """The GPU's crop strategy (full decode, crop box from the JPEG header) run on CPU operators, two epochs
    from one pipeline (val: each epoch padded to whole batches, the padding trimmed)."""
    cfg = AugmentConfig.train(image_size=24, brightness=0, contrast=0, saturation=0, hue=0, rotation=0)
    loader = make_loader(shards, split, batch_size=4, backend="dali", device="cpu", image_size=24, shuffle=True)
    backend = create_backend("dali-cpu", loader.backend_context(augment=cfg, horizon=2, roi_decode=False))
    for epoch in range(2):
        n, indices = 0, loader.indices(epoch)
        for images, labels in backend.epoch(indices, epoch):
            idx = indices[4 * n:4 * n + 4]
            assert decode_index(images) == [int(loader.samples.refs[i].key) for i in idx]
            assert labels.tolist() == [labels_of(int(loader.samples.refs[i].key)) for i in idx]
            n += 1
        assert n == len(loader)
    backend.close()


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_full_train_augmentation_runs(shards, backend, device):
    loader = make_loader(shards, "train", batch_size=8, backend=backend, device=device, image_size=32, workers=0)
    batches = run(loader)
    assert len(batches) == N_TRAIN // 8 and all(b.images.shape == (8, 3, 32, 32) for b in batches)
    assert all(torch.isfinite(b.images).all() for b in batches) and batches[0].keys is None


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_eval_exact_cover_across_ranks(shards, backend, device, world_size):
    seen = []
    for rank in range(world_size):
        loader = make_loader(shards, "val", batch_size=3, backend=backend, device=device, rank=rank,
                             world_size=world_size, with_keys=True, image_size=16, workers=0)
        batches = run(loader)
        keys = [k for b in batches for k in b.keys]
        n = N_VAL // world_size + (rank < N_VAL % world_size)  # numpy.array_split share sizes
        assert len(keys) == loader.num_samples == n
        assert [len(b.keys) for b in batches] == [min(3, n - i) for i in range(0, n, 3)]  # only the last is partial
        seen += keys
    assert sorted(seen) == [f"{k:05d}" for k in range(N_TRAIN, N_TRAIN + N_VAL)]  # all, once, no padding


@pytest.mark.parametrize("world_size", [1, 2, 3])
@needs_dali
def test_train_epochs_disjoint_reshuffled_reproducible(shards, world_size):
    per_epoch = []
    for epoch in range(2):
        keys = []
        for rank in range(world_size):
            loader = make_loader(shards, "train", batch_size=2, backend="dali", device="cpu", rank=rank,
                                 world_size=world_size, with_keys=True, image_size=16)
            loader.set_epoch(epoch)
            got = [k for b in run(loader) for k in b.keys]
            assert got == loader.keys(epoch) and len(got) == (N_TRAIN // world_size) // 2 * 2
            keys += got
        assert len(set(keys)) == len(keys)
        per_epoch.append(keys)
    assert per_epoch[0] != per_epoch[1]


@needs_dali
def test_same_seed_epoch_same_order_across_backends_and_instances(shards):
    orders = []
    for backend in ("dali", "torch", "dali"):
        loader = make_loader(shards, "train", batch_size=4, backend=backend, device="cpu", with_keys=True,
                             image_size=16, seed=7, workers=0)
        loader.set_epoch(3)
        orders.append([k for b in loader for k in b.keys])
    assert orders[0] == orders[1] == orders[2]


@needs_dali
@pytest.mark.parametrize("roi_decode", [True, False])
def test_train_augmentation_pure_function_of_seed_epoch(shards, roi_decode):
    """Epoch 2's augmented images are identical whether its pipeline started at epoch 0 (horizon) or at 2 (a
    resumed run): the random numbers are drawn per batch from (seed, rank, epoch, batch)."""
    loader = make_loader(shards, "train", batch_size=4, backend="dali", device="cpu", image_size=16)
    runs_ = []
    for start in (0, 2):
        backend = create_backend("dali-cpu", loader.backend_context(horizon=4, roi_decode=roi_decode))
        for epoch in range(start, 3):
            out = torch.cat([x.clone() for x, _ in backend.epoch(loader.indices(epoch), epoch)])
        runs_.append(out)
        backend.close()
    assert torch.equal(runs_[0], runs_[1])


@needs_dali
def test_epoch_advances_and_state_dict(shards):
    loader = make_loader(shards, "train", batch_size=4, backend="dali", device="cpu", with_keys=True,
                         image_size=16)
    first = [k for b in loader for k in b.keys]
    assert loader.state_dict()["epoch"] == 1
    second = [k for b in loader for k in b.keys]
    assert first != second and second == loader.keys(1)
    other = make_loader(shards, "train", batch_size=4, backend="dali", device="cpu", with_keys=True,
                        image_size=16)
    other.load_state_dict(loader_state_at_epoch_1 := {**loader.state_dict(), "epoch": 1, "consumed": 0})
    assert loader_state_at_epoch_1["version"] == 1
    assert [k for b in other for k in b.keys] == second


@needs_dali
def test_break_mid_epoch_then_rerun(shards):
    loader = make_loader(shards, "val", batch_size=2, backend="dali", device="cpu", with_keys=True, image_size=16)
    next(iter(loader))  # abandoned iteration: the epoch does not advance, the next pass is complete
    assert [k for b in loader for k in b.keys] == [f"{k:05d}" for k in range(N_TRAIN, N_TRAIN + N_VAL)]


@needs_dali
def test_dali_cpu_and_torch_eval_agree(shards):
    """Same images, eval transform: the JPEG decoders (libjpeg-turbo in both, but DALI's build) and resamplers
    differ by rounding, so compare mean |diff| in normalized units (0.01 ~ 0.6 grey levels) rather than exact
    pixels. Measured on the 1,000 real test images at 224: mean 0.0017, worst image 0.0035."""
    out = {}
    for backend in ("dali", "torch"):
        loader = make_loader(shards, "test", batch_size=4, backend=backend, device="cpu", image_size=32, workers=0)
        out[backend] = torch.cat([b.images for b in loader])
        assert torch.equal(torch.cat([b.labels for b in loader]), torch.full((N_TEST, 6), -1))
    diff = (out["dali"] - out["torch"]).abs()
    assert diff.mean() < 0.01, diff.mean()
    assert diff.mean(dim=(1, 2, 3)).max() < 0.02


def test_auto_without_dali_falls_back_to_torch(shards, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_dali(name, *args, **kw):
        if name.startswith("nvidia.dali") or name == "nvidia":
            raise ImportError("No module named 'nvidia.dali' (test)")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_dali)
    with caplog.at_level(logging.WARNING, logger="fastfashion.loading"):
        loader = make_loader(shards, "val", batch_size=4, image_size=16, workers=0)
    assert loader.backend == "torch" and loader.device == torch.device("cpu")
    assert "loader backend: torch (NVIDIA DALI is not importable: No module named 'nvidia.dali' (test))" in caplog.text
    with pytest.raises(RuntimeError, match=r"^backend 'dali' requested but NVIDIA DALI cannot be imported: No module "
                                           r"named 'nvidia\.dali' \(test\)$"):
        make_loader(shards, "val", backend="dali", device="cpu")


@needs_dali
def test_auto_on_cpu_picks_dali_cpu(shards, caplog):
    with caplog.at_level(logging.INFO, logger="fastfashion.loading"):
        loader = make_loader(shards, "val", batch_size=4, image_size=16)
    expected = "dali-gpu" if torch.cuda.is_available() else "dali-cpu"
    why = "CUDA is available" if torch.cuda.is_available() else "no CUDA device"
    assert loader.backend == expected and f"loader backend: {expected} ({why})" in caplog.text


def test_bad_arguments(shards):
    with pytest.raises(ValueError, match=f"^{re.escape(str(shards))}: no split 'nope' "
                                         r"\(has \['test', 'train', 'val'\]\)$"):
        make_loader(shards, "nope")
    with pytest.raises(ValueError, match="^unknown backend 'tensorflow'; choose from auto, dali, dali-gpu, dali-cpu, "
                                         "torch$"):
        make_loader(shards, "val", backend="tensorflow")
    with pytest.raises(ValueError, match="^rank 2 out of range for world_size 2$"):
        make_loader(shards, "val", rank=2, world_size=2)


def _corrupt_copy(shards, tmp_path):
    dst = tmp_path / "shards"
    shutil.copytree(shards, dst)
    return dst


def _garble_member(tar_path, name, keep: int = 0):
    """Overwrite one member's bytes in place after its first ``keep`` bytes (same size: the index stays valid, the
    JPEG does not)."""
    with tarfile.open(tar_path) as tf:
        m = tf.getmember(name)
        off, size = m.offset_data, m.size
    with open(tar_path, "r+b") as f:
        f.seek(off + keep)
        f.write(b"\x00" * (size - keep))


@pytest.mark.parametrize("backend", [pytest.param("dali", marks=needs_dali), "torch"])
def test_corrupt_sample_names_shard_and_key(shards, tmp_path, backend):
    dst = _corrupt_copy(shards, tmp_path)
    _garble_member(dst / "val-00001.tar", "00034.jpg")  # val shards hold 4 samples each: 29..32, 33..36
    tar = re.escape(str(dst / "val-00001.tar"))
    with pytest.raises(ManifestError, match=f"^{tar}: sha256 differs from the manifest \\(corrupted or modified\\)$"):
        make_loader(dst, "val", batch_size=4, backend=backend, device="cpu", image_size=16, workers=0)
    # without the checksum check, the per-sample check still names shard and key before any decoder sees the bytes
    with pytest.raises(LoaderError, match=f"^{tar}: sample '00034': the .jpg member is not JPEG data \\(starts with "
                                          "000000\\)$"):
        make_loader(dst, "val", batch_size=4, backend=backend, device="cpu", image_size=16, workers=0, verify=False)


def test_torch_worker_error_is_one_line(shards, tmp_path):
    """A sample failing in a DataLoader worker surfaces as our one-line LoaderError, not torch's multi-line
    "Caught LoaderError in DataLoader worker process" re-wrap (a JPEG whose structure passes the checks but does not
    decode: its quantization tables turned into a comment)."""
    dst = _corrupt_copy(shards, tmp_path)
    with tarfile.open(dst / "val-00001.tar") as tf:
        m = tf.getmember("00034.jpg")
    with open(dst / "val-00001.tar", "r+b") as f:
        f.seek(m.offset_data)
        data = bytearray(f.read(m.size))
        pos = 2
        while data[pos + 1] != 0xDA:
            data[pos + 1] = 0xFE if data[pos + 1] == 0xDB else data[pos + 1]
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        f.seek(m.offset_data)
        f.write(data)
    loader = make_loader(dst, "val", batch_size=4, backend="torch", device="cpu", image_size=16, workers=1,
                         verify=False)
    with pytest.raises(LoaderError, match=f"^{re.escape(str(dst / 'val-00001.tar'))}: sample '00034': ") as info:
        list(loader)
    msg = str(info.value)
    assert "\n" not in msg and "Caught" not in msg and "00034" in msg
    assert msg.startswith(str(dst / "val-00001.tar") + ": sample '00034': "), msg


def test_truncated_shard_fails_at_construction(shards, tmp_path):
    dst = _corrupt_copy(shards, tmp_path)
    with open(dst / "val-00002.tar", "r+b") as f:
        f.truncate(1024)
    size = read_manifest(shards)["splits"]["val"]["shards"][2]["bytes"]
    with pytest.raises(ManifestError, match=f"^{re.escape(str(dst / 'val-00002.tar'))}: missing or not {size} bytes as "
                                            "the manifest records$"):  # the manifest's size check comes first
        make_loader(dst, "val", batch_size=4, backend="torch", device="cpu")


def test_shard_files_without_pread(shards, monkeypatch):
    """Windows has no os.pread: ShardFiles falls back to seek + read, with the same bytes."""
    loader = make_loader(shards, "val", batch_size=4, backend="torch", device="cpu", image_size=16, workers=0)
    with tarfile.open(shards / "val-00000.tar") as tf:
        expected = tf.extractfile("00029.jpg").read()
    ref = next(r for r in loader.samples.refs if r.key == "00029")
    with ShardFiles() as files:
        assert files.sample(ref)[0] == expected
    monkeypatch.delattr(os, "pread", raising=False)
    with ShardFiles() as files:
        jpg, lbl = files.sample(ref)
        assert jpg == expected and np.frombuffer(lbl, "<i8").tolist() == labels_of(29)
        end = os.path.getsize(ref.tar)
        with pytest.raises(OSError, match=rf"^short read \(4 of 8 bytes at offset {end - 4}\)$"):
            files.read(ref.tar, end - 4, 8)


def test_decoder_cache_size():
    free = 1000
    fits, too_big = int(CACHE_FRACTION * free), int(CACHE_FRACTION * free) + 1
    assert decoder_cache_mb(fits, free, None) == fits and decoder_cache_mb(too_big, free, None) == 0
    assert decoder_cache_mb(fits, free, False) == 0
    assert decoder_cache_mb(too_big, free, True) == too_big
    assert decoder_cache_mb(10 * free, free, True) == int(FORCED_CACHE_FRACTION * free)  # forced, still bounded


@pytest.mark.parametrize("backend", [pytest.param("dali", marks=needs_dali), "torch"])
def test_gpu_cache_ignored_off_gpu(shards, backend, caplog):
    with caplog.at_level(logging.DEBUG, logger="fastfashion.loading"):
        loader = make_loader(shards, "val", batch_size=4, backend=backend, device="cpu", image_size=16, workers=0,
                             gpu_cache=True, with_keys=True)
    assert f"gpu_cache=True ignored: backend {loader.backend} has no GPU decoder cache" in caplog.text
    assert [k for b in loader for k in b.keys] == loader.keys(0)
    with pytest.raises(ValueError, match="^gpu_cache must be None, True or False, got 'yes'$"):
        make_loader(shards, "val", backend=backend, device="cpu", gpu_cache="yes")


def test_jpeg_bytes_untouched_by_shard(shards):
    """Sanity of the fixture: a val sample's member is the original JPEG (colour of its index)."""
    with tarfile.open(shards / "val-00000.tar") as tf:
        data = tf.extractfile("00029.jpg").read()
    assert np.abs(np.asarray(Image.open(io.BytesIO(data))).mean((0, 1)) - colour(29)).max() < 3


@pytest.mark.gpu
@needs_dali
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dali_gpu_pipeline(shards):
    for gpu_cache in (None, False, True):  # automatic (on: the tiny split fits), off, forced on
        loader = make_loader(shards, "val", batch_size=4, backend="dali", device="cuda", augment=False,
                             with_keys=True, image_size=32, gpu_cache=gpu_cache)
        assert loader.backend == "dali-gpu"
        for b in run(loader):
            assert b.images.is_cuda and b.labels.is_cuda and b.labels.dtype == torch.int64
            assert b.images.dtype == torch.float32 and b.images.shape[1:] == (3, 32, 32)
            assert [f"{k:05d}" for k in decode_index(b.images)] == b.keys
            assert b.labels.tolist() == [labels_of(int(k)) for k in b.keys]
        assert (loader.active_backend.cache_mb > 0) == (gpu_cache is not False)
        loader.close()
    train = make_loader(shards, "train", batch_size=4, backend="dali", device="cuda", with_keys=True,
                        image_size=32, augment=AugmentConfig.train(fp16=True))
    for epoch in range(3):  # one pipeline (and decoder cache) serves several epochs
        train.set_epoch(epoch)
        batches = run(train)
        assert [k for b in batches for k in b.keys] == train.keys(epoch)
        for b in batches:
            assert b.images.is_cuda and b.images.dtype == torch.float16 and b.images.shape == (4, 3, 32, 32)
            assert torch.isfinite(b.images).all() and b.labels.is_cuda
    assert train.active_backend.epochs_planned == list(range(8))  # built once, at epoch 0, for the 8-epoch GPU horizon
    train.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_backend_on_cuda_pins_memory(shards):
    loader = make_loader(shards, "val", batch_size=4, backend="torch", device="cuda", augment=False,
                         with_keys=True, image_size=32, workers=1)
    for b in run(loader):
        assert b.images.is_cuda and b.labels.is_cuda
        assert [f"{k:05d}" for k in decode_index(b.images)] == b.keys
    # non_blocking host->device copies are asynchronous only from pinned memory
    assert loader.active_backend.pin_memory is True


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_resume_mid_epoch_gives_the_same_batches(shards, backend, device):
    """Stopped after 3 batches, the state through JSON, a new loader: the rest of the epoch, with the same keys,
    labels and augmented pixels as an uninterrupted loader (augmentation is a function of seed, epoch, sample)."""
    import json
    kw = dict(batch_size=3, backend=backend, device=device, image_size=16, with_keys=True, workers=0, seed=4)
    whole = make_loader(shards, "train", **kw)
    whole.set_epoch(2)
    expected = [(b.keys, b.labels.clone(), b.images.clone()) for b in whole]
    first = make_loader(shards, "train", **kw)
    first.set_epoch(2)
    it = iter(first)
    got = [next(it) for _ in range(3)]
    state = json.loads(json.dumps(first.state_dict()))
    assert state["epoch"] == 2 and state["consumed"] == 9
    second = make_loader(shards, "train", **kw)
    second.load_state_dict(state)
    got += list(second)
    assert [b.keys for b in got] == [k for k, _, _ in expected]
    for b, (_, labels, images) in zip(got, expected):
        assert torch.equal(b.labels, labels) and torch.equal(b.images, images)
    assert second.state_dict()["epoch"] == 3  # the epoch was completed


def test_break_then_iterate_again_starts_the_next_epoch_and_the_state_keeps_the_position(shards):
    """Issue 26 changed this: iterating again after a break used to continue the epoch (which made Lightning, which
    stops after len() batches, lose every second epoch); now it starts the next epoch (torchdata's rule), and the
    state taken after the break still resumes the rest of the abandoned epoch in a new loader."""
    kw = dict(batch_size=2, backend="torch", device="cpu", with_keys=True, image_size=16, workers=0)
    loader = make_loader(shards, "train", **kw)
    it = iter(loader)
    head = [k for _ in range(3) for k in next(it).keys]
    del it
    state = loader.state_dict()
    assert (state["epoch"], state["consumed"]) == (0, 6)
    assert [k for b in loader for k in b.keys] == loader.keys(1) and loader.epoch == 2
    resumed = make_loader(shards, "train", **kw)
    resumed.load_state_dict(state)
    assert head + [k for b in resumed for k in b.keys] == loader.keys(0)


@pytest.mark.parametrize("old,new", [(2, 1), (2, 3)])
def test_elastic_resume_delivers_each_sample_of_the_epoch_once(shards, old, new):
    kw = dict(batch_size=2, backend="torch", device="cpu", image_size=16, with_keys=True, workers=0)
    loaders = [make_loader(shards, "train", rank=r, world_size=old, **kw) for r in range(old)]
    seen = []
    for loader in loaders:  # 2 steps in lockstep
        it = iter(loader)
        seen += [k for _ in range(2) for k in next(it).keys]
    state = loaders[0].state_dict()
    assert state["consumed"] == 2 * 2 * old and all(ld.state_dict() == state for ld in loaders)
    for r in range(new):
        resumed = make_loader(shards, "train", rank=r, world_size=new, **kw)
        resumed.load_state_dict(state)
        seen += [k for b in resumed for k in b.keys]
    assert len(seen) == len(set(seen))  # none twice
    missing = set(f"{k:05d}" for k in range(N_TRAIN)) - set(seen)
    assert len(missing) < new * 2  # none skipped but the drop_last tail


def test_a_state_of_other_data_is_refused(shards, tmp_path):
    other = tmp_path / "other"
    write_shards(make_dataset(tmp_path / "data", train=12, val=4, test=4), other, ShardConfig(workers=1))
    state = make_loader(other, "train", batch_size=2, backend="torch", device="cpu").state_dict()
    loader = make_loader(shards, "train", batch_size=2, backend="torch", device="cpu")
    with pytest.raises(ValueError, match="^the loader state is for data 'sha256:[0-9a-f]{64}', this loader has "
                                         "'sha256:[0-9a-f]{64}'$"):
        loader.load_state_dict(state)
    with pytest.raises(ValueError, match="^the loader state is for batch_size 3, this loader has 2$"):
        loader.load_state_dict({**loader.state_dict(), "batch_size": 3})
