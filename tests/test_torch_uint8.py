"""The torch backend's uint8 path (``output="uint8"``, fastfashion/loading/backends/torch_uint8.py): the same
geometry draws as the float path's torchvision transform, the same pixels within 1 grey level, the same colour
matrices as dali-cpu, a drafted (DCT-scaled) decode close to the full one, and the same one-line errors."""
from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pytest
import torch
from helpers import HAVE_DALI, make_shard_set

from fastfashion.loading.augment import AugmentConfig
from fastfashion.loading.base import LoaderError
from fastfashion.loading.loader import make_loader

NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """16 train / 8 val / 4 test synthetic samples (long side 300 px, like the real set) in shards of 8."""
    return make_shard_set(tmp_path_factory.mktemp("u8"), train=16, val=8, test=4, samples_per_shard=8)


def _read(shards, split, output, *, workers=0, augment=None, backend="torch", image_size=160):
    loader = make_loader(shards, split, batch_size=8, backend=backend, device="cpu", image_size=image_size,
                         workers=workers, augment=augment, output=output, shuffle=True, seed=3, with_keys=True)
    batches = list(loader)
    loader.close()
    return batches


@pytest.mark.parametrize("split", ["train", "val"])
def test_uint8_images_equal_the_float_path_within_one_grey_level(shards, split):
    """No jitter, 160 px from 300 px images: no crop reaches 2x the output, so no drafted decode. The float path
    resizes with PIL, the uint8 path with torch's uint8 antialiased kernel (PIL's filter, rounded differently); the
    crop box, flip, angle and the nearest-neighbour rotation are the same, so every pixel is within 1 grey level."""
    aug = AugmentConfig.train(**NO_JITTER) if split == "train" else None
    flt, u8 = _read(shards, split, "float", augment=aug), _read(shards, split, "uint8", augment=aug)
    assert [b.keys for b in flt] == [b.keys for b in u8]
    std = torch.tensor(AugmentConfig().std).view(1, 3, 1, 1)
    for f, u in zip(flt, u8):
        assert u.images.dtype == torch.uint8 and u.images.shape == f.images.shape == (8, 3, 160, 160)
        assert u.images.is_contiguous(memory_format=torch.channels_last)  # an HWC buffer, as on the DALI backends
        assert u.colour.shape == (8, 3, 4) and f.colour is None
        grey = ((u.finished() - f.images) * std * 255).abs()
        assert grey.max().item() <= 1.0 + 1e-3
        assert grey.mean().item() < 0.05  # nearly all equal: the two kernels differ by one level on few pixels
    if split == "train":  # and the augmentation is not the identity: crops differ between samples
        assert not torch.equal(u8[0].images[0], u8[0].images[1])


def test_crop_flip_and_angle_are_torchvisions_draws():
    """:meth:`Uint8Sample.plan` draws what torchvision's v2 RandomResizedCrop, RandomHorizontalFlip and
    RandomRotation draw from the same torch seed (including the central fallback of an extreme aspect ratio)."""
    from torchvision.transforms import v2 as T

    from fastfashion.loading.augment import sample_seed
    from fastfashion.loading.backends.torch_uint8 import Uint8Sample
    for cfg, sizes in [(AugmentConfig.train(), [(300, 200), (251, 300), (1600, 1200)]),
                       (AugmentConfig.train(scale=(0.9, 1.0), ratio=(3.0, 4.0), rotation=0.0), [(300, 200)])]:
        sample = Uint8Sample(cfg, seed=5)
        crop = T.RandomResizedCrop(cfg.image_size, scale=cfg.scale, ratio=cfg.ratio)
        for h, w in sizes:
            for i in range(25):
                torch.manual_seed(sample_seed(5, 2, i))
                box = crop.make_params([torch.zeros(3, h, w)])
                flip = torch.rand(1).item() < cfg.flip
                angle = torch.empty(1).uniform_(-cfg.rotation, cfg.rotation).item() if cfg.rotation else 0.0
                p = sample.plan(i, 2, h, w)
                assert (p.top, p.left, p.height, p.width, p.flip, p.angle) == \
                    (box["top"], box["left"], box["height"], box["width"], flip, angle)


@pytest.mark.skipif(not HAVE_DALI, reason="DALI is not installed")
@pytest.mark.parametrize("split", ["train", "val"])
def test_colour_matrices_equal_dali_cpus(shards, split):
    """Jitter on: each sample's colour matrix is the dali-cpu backend's for the same sample and seed (both come
    from augment.draw_params), in the same order."""
    torch_batches = _read(shards, split, "uint8", image_size=32)
    dali_batches = _read(shards, split, "uint8", image_size=32, backend="dali-cpu")
    assert [b.keys for b in torch_batches] == [b.keys for b in dali_batches]
    for t, d in zip(torch_batches, dali_batches):
        assert torch.equal(t.colour, d.colour)
    if split == "train":  # jitter drawn: not every sample gets the same matrix
        assert not torch.equal(torch_batches[0].colour[0], torch_batches[0].colour[1])


def _big_jpeg(size: tuple[int, int]) -> bytes:
    from fastfashion.data.synth import render_garment
    from fastfashion.schema import FASHION_SCHEMA
    img = render_garment(FASHION_SCHEMA, [0] * len(FASHION_SCHEMA), np.random.default_rng(0), size)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("cfg", [AugmentConfig.train(image_size=64), AugmentConfig.eval(image_size=64)],
                         ids=["train", "eval"])
def test_drafted_decode_is_close_to_the_full_decode(cfg):
    """A 1200x1600 image at 64 px: every train crop is at least 2x the output (area >= 8 % of the image) and the
    eval resize target (73 px) is under an eighth of it, so each sample is decoded at 1/2..1/8 size (libjpeg's DCT
    scaling) instead of in full. Measured on this image: mean |difference| per image <= 2.6 grey levels (1.1 on
    average, train) and 0.4 (eval); single pixels at sharp edges differ more (the box is rounded to whole reduced
    pixels, and DCT scaling is not PIL's filter)."""
    from fastfashion.loading.backends.torch_uint8 import Uint8Sample
    jpg = _big_jpeg((1200, 1600))
    drafted, full = Uint8Sample(cfg, seed=0), Uint8Sample(cfg, seed=0, draft=False)
    means = []
    for i in range(12):
        a, b = np.zeros((64, 64, 3), np.uint8), np.ones((64, 64, 3), np.uint8)
        drafted(jpg, "x", i, 0, a)
        full(jpg, "x", i, 0, b)
        means.append(np.abs(a.astype(int) - b.astype(int)).mean())
    assert max(means) < 4.0 and np.mean(means) < 2.0
    assert min(means) > 0  # the drafted decode did run (a full decode would match exactly)


def test_workers_deliver_the_same_batches(shards):
    """Two DataLoader workers (batches assembled in shared memory) deliver what the main process assembles."""
    main, workers = _read(shards, "train", "uint8", image_size=32), _read(shards, "train", "uint8", workers=2,
                                                                          image_size=32)
    assert [b.keys for b in main] == [b.keys for b in workers]
    for a, b in zip(main, workers):
        assert torch.equal(a.images, b.images) and torch.equal(a.colour, b.colour) and torch.equal(a.labels, b.labels)


@pytest.mark.parametrize("scenario", ["undefined_tables_rehashed", "garbage_scan_rehashed", "truncated_scan_rehashed"])
def test_a_corrupt_jpeg_is_one_line_naming_shard_and_key(tmp_path, scenario):
    """tests/test_faults.py's JPEG scenarios with output='uint8': the float path's line, refused when the split is
    opened or, found only by the decoder, after the batches before the broken sample in PIL's words (a JPEG that
    decode_jpeg refuses is handed to PIL, which decodes it or says why not)."""
    import fault_runner
    from helpers import make_dataset
    from test_faults import DECODED_BEFORE, EXPECTED

    from fastfashion.data.shard import ShardConfig, write_shards
    base = tmp_path / "base"
    write_shards(make_dataset(tmp_path / "data", train=8, val=12, test=4), base, ShardConfig(workers=1,
                                                                                            samples_per_shard=4))
    d = tmp_path / scenario / "shards"
    shutil.copytree(base, d)
    fault_runner.SCENARIOS[scenario](d)
    batches, loader = 0, None
    with pytest.raises(LoaderError) as e:  # the header check refuses the hostile ones when the split is opened
        loader = make_loader(d, "val", batch_size=4, backend="torch", device="cpu", image_size=16, workers=0,
                             output="uint8")
        for _ in loader:
            batches += 1
    if loader is not None:
        loader.close()
    assert batches == DECODED_BEFORE.get(scenario, 0)
    assert re.fullmatch(EXPECTED[scenario].replace("{d}", re.escape(str(d))), f"LoaderError: {e.value}")


def test_other_images_go_through_pil_and_garbage_names_the_sample():
    """A CMYK JPEG (4 components: not for decode_jpeg) and PNG bytes (no JPEG header: a sample changed after the
    split was checked) are decoded by PIL, as on the float path; bytes no decoder reads raise the one line."""
    from PIL import Image

    from fastfashion.loading.backends.torch_uint8 import Uint8Sample
    sample = Uint8Sample(AugmentConfig.eval(image_size=16), seed=0)
    for mode, fmt in [("CMYK", "JPEG"), ("RGB", "PNG")]:
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), (200, 40, 90)).convert(mode).save(buf, fmt, quality=95)
        expected = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))[15, 20]
        out = np.zeros((16, 16, 3), np.uint8)
        sample(buf.getvalue(), "x.tar: sample 'k'", 0, 0, out)
        assert (np.abs(out.astype(int) - expected.astype(int)) <= 1).all(), (mode, out[8, 8], expected)
    with pytest.raises(LoaderError, match=r"^x\.tar: sample 'k': cannot identify image file"):
        sample(b"\xff\xd8garbage" * 10, "x.tar: sample 'k'", 0, 0, np.zeros((16, 16, 3), np.uint8))
