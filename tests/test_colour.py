"""The colour matrix (fastfashion/loading/colour.py): one [3, 4] map per sample reproduces today's float operators.

- against DALI's own ``hsv`` operator on fixed draws (CPU pipeline), and against the whole dali-cpu float graph
  through the loader (train with every jitter and rotation on, and eval): ``output="uint8"`` finished equals
  ``output="float"`` within 1/255 of a grey level after denormalization;
- against torchvision's brightness, saturation and contrast on fixed factors (contrast around 128: on an image whose
  mean grey is 128 the two conventions agree), within rounding;
- ``apply_colour``: layouts, dtypes, autocast, shapes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastfashion import make_loader
from fastfashion.errors import ConfigError
from fastfashion.loading.augment import RAND_FIELDS, AugmentConfig, draw_params
from fastfashion.loading.base import LoaderConfig
from fastfashion.loading.colour import apply_colour, colour_matrices, hsv_matrices

STD = np.asarray(AugmentConfig().std)


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory):
    from helpers import make_shard_set
    return make_shard_set(tmp_path_factory.mktemp("colour"), train=24, val=16, test=8, samples_per_shard=8)


def _dali_hsv(img: np.ndarray, hue: float, saturation: float) -> np.ndarray:
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        x = fn.external_source(source=lambda: img, batch=False, layout="HWC")
        return fn.hsv(x, hue=hue, saturation=saturation, dtype=types.FLOAT)

    p = pipe()
    p.build()
    return np.array(p.run()[0].as_tensor())[0]


@pytest.mark.parametrize("hue,saturation", [(0.0, 1.0), (17.5, 0.8), (-18.0, 1.2), (3.0, 1.0)])
def test_hsv_matrix_is_dalis_operator(hue, saturation):
    pytest.importorskip("nvidia.dali")
    img = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    want = _dali_hsv(img, hue, saturation)
    got = img.astype(np.float64) @ hsv_matrices(np.array([saturation]), np.array([hue]))[0].T
    assert np.abs(got - want).max() < 1e-3  # grey levels: float rounding only


def _denormalized_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference of two normalized batches in grey levels (0..255)."""
    return float(((a - b).abs() * torch.tensor(STD * 255.0, dtype=torch.float32).view(1, 3, 1, 1)).max())


@pytest.mark.parametrize("split", ["train", "val"])
def test_uint8_output_finished_equals_the_float_graph(tiny_shards, split):
    pytest.importorskip("nvidia.dali")
    mode = "train" if split == "train" else "eval"
    cfg = AugmentConfig(mode=mode, image_size=48, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)
    kw = dict(split=split, batch_size=8, backend="dali-cpu", device="cpu", augment=cfg, image_size=48, seed=3)
    floats = list(make_loader(tiny_shards, **kw))
    uint8 = list(make_loader(tiny_shards, output="uint8", **kw))
    assert len(floats) == len(uint8) > 0
    for f, u in zip(floats, uint8):
        assert u.images.dtype == torch.uint8 and u.colour.shape == (len(u.labels), 3, 4)
        assert torch.equal(f.labels, u.labels)
        assert _denormalized_diff(f.images, u.finished()) <= 1 / 255
    if split == "train":  # the jitter really varies per sample (not the identity or one matrix for all)
        c = torch.cat([u.colour for u in uint8])
        assert float((c - c[0]).abs().max()) > 1e-2


def test_eval_matrix_is_the_normalization():
    cfg = AugmentConfig.eval()
    m = colour_matrices(cfg, None, 2)
    assert m.shape == (2, 3, 4)
    white = m[0, :, :3] @ np.full(3, 255.0) + m[0, :, 3]
    assert np.allclose(white, (1 - np.asarray(cfg.mean)) / np.asarray(cfg.std), atol=1e-5)


def test_draws_cover_the_configured_ranges():
    cfg = AugmentConfig(brightness=0.2, contrast=0.3, saturation=0.4, hue=0.05)
    p = draw_params(cfg, seed=0, epoch=0, indices=np.arange(4000))
    for name, lo, hi in (("brightness", 0.8, 1.2), ("contrast", 0.7, 1.3), ("saturation", 0.6, 1.4),
                         ("hue", -18.0, 18.0)):
        col = p[:, RAND_FIELDS.index(name)]
        assert lo <= col.min() < lo + 0.02 * (hi - lo) and hi - 0.02 * (hi - lo) < col.max() <= hi


def _only(**jitter) -> AugmentConfig:
    base = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    return AugmentConfig(**{**base, **jitter})


def _params(**factors) -> np.ndarray:
    p = np.zeros((1, len(RAND_FIELDS)), dtype=np.float32)
    for name in ("brightness", "contrast", "saturation"):
        p[0, RAND_FIELDS.index(name)] = factors.get(name, 1.0)
    p[0, RAND_FIELDS.index("hue")] = factors.get("hue", 0.0)
    return p


def _apply_denormalized(cfg: AugmentConfig, params: np.ndarray, img: torch.Tensor) -> torch.Tensor:
    """The matrix applied to a uint8 CHW image, back in grey levels (0..255)."""
    out = apply_colour(img[None], colour_matrices(cfg, params))[0]
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1)
    return (out * std + mean) * 255.0


@pytest.mark.parametrize("name,factor", [("brightness", 0.8), ("brightness", 1.15), ("saturation", 0.7),
                                         ("saturation", 1.3), ("contrast", 0.75), ("contrast", 1.2)])
def test_matrix_matches_torchvision_on_fixed_factors(name, factor):
    import torchvision.transforms.v2.functional as F
    g = torch.Generator().manual_seed(5)
    img = torch.randint(60, 196, (3, 24, 24), dtype=torch.uint8, generator=g)  # no clipping at these factors
    if name == "contrast":  # torchvision blends towards the image's mean grey: make it 128, where both agree
        grey = F.rgb_to_grayscale(img.float() / 255.0).mean() * 255.0
        img = (img.float() + (128.0 - grey)).round().clamp(0, 255).to(torch.uint8)
        grey = float(F.rgb_to_grayscale(img.float() / 255.0).mean() * 255.0)
        assert abs(grey - 128.0) < 0.5
    want = getattr(F, f"adjust_{name}")(img, factor).float()
    got = _apply_denormalized(_only(**{name: 0.5}), _params(**{name: factor}), img)
    # torchvision rounds its grey and its result to uint8 (< 1 level together), and DALI's YIQ rows are not exactly
    # the luma weights (I and Q of a grey are +-0.001 of it): < 1.5 grey levels in all
    assert float((got - want).abs().max()) <= 1.5


def test_hue_is_a_rotation_that_keeps_grey_and_luma():
    cfg = _only(hue=0.1)
    grey = torch.full((3, 4, 4), 90, dtype=torch.uint8)
    # DALI's I and Q rows sum to +-0.001, not 0: a grey keeps its value within 0.001 * 90 * 2
    assert float((_apply_denormalized(cfg, _params(hue=30.0), grey) - 90.0).abs().max()) < 0.2
    img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    out = _apply_denormalized(cfg, _params(hue=30.0), img)
    w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    assert float(((out * w).sum(0) - (img.float() * w).sum(0)).abs().max()) < 1e-2
    assert float((out - img.float()).abs().max()) > 5.0  # and it does change colours


@pytest.mark.parametrize("channels_last_in", [False, True])
@pytest.mark.parametrize("channels_last_out", [False, True])
def test_apply_colour_layouts_and_dtypes(channels_last_in, channels_last_out):
    g = torch.Generator().manual_seed(0)
    hwc = torch.randint(0, 256, (3, 5, 7, 3), dtype=torch.uint8, generator=g)
    images = hwc.permute(0, 3, 1, 2) if channels_last_in else hwc.permute(0, 3, 1, 2).contiguous()
    cfg = AugmentConfig()
    colour = colour_matrices(cfg, draw_params(cfg, 0, 0, [0, 1, 2]))
    want = torch.einsum("bck,bhwk->bchw", torch.from_numpy(colour[:, :, :3]).double(), hwc.double()) + \
        torch.from_numpy(colour[:, :, 3]).double()[:, :, None, None]
    out = apply_colour(images, colour, channels_last=channels_last_out)
    fmt = torch.channels_last if channels_last_out else torch.contiguous_format
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=fmt)
    assert float((out.double() - want).abs().max()) < 1e-5
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the finish stays float32 under a caller's autocast
        assert torch.equal(apply_colour(images, colour, channels_last=channels_last_out), out)
    half = apply_colour(images, colour, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and float((half.double() - want).abs().max()) < 0.02


def test_apply_colour_refuses_shapes_that_do_not_match():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ConfigError, match=r"colour must be \[2, 3, 4\]"):
        apply_colour(images, np.zeros((3, 3, 4), np.float32))
    with pytest.raises(ConfigError, match="images must be"):
        apply_colour(images[:, :1], np.zeros((2, 3, 4), np.float32))


def test_uint8_output_refuses_an_augment_callable():
    with pytest.raises(ConfigError, match="augment callable"):
        LoaderConfig(output="uint8", augment=lambda img: img)
    with pytest.raises(ConfigError, match="output must be one of auto, float, uint8"):
        LoaderConfig(output="fp32")


def test_fashionnet_takes_uint8_images_with_their_colour():
    from fastfashion.schema import FASHION_SCHEMA
    from fastfashion.train.model import FashionNet
    torch.manual_seed(0)
    model = FashionNet(FASHION_SCHEMA).eval()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    cfg = AugmentConfig()
    colour = torch.from_numpy(colour_matrices(cfg, draw_params(cfg, 0, 0, [0, 1])))
    with torch.inference_mode():
        a = torch.cat(model(images, colour), dim=1)
        b = torch.cat(model(apply_colour(images, colour)), dim=1)
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ConfigError, match="colour matrices"):
        model(images)


def test_auto_output_is_uint8_except_dali_cpu_feeding_the_cpu(tiny_shards):
    from fastfashion.loading.base import auto_output
    assert auto_output("dali-cpu", "cpu") == "float"
    assert auto_output("dali-cpu", "cuda") == "uint8" and auto_output("dali-gpu", "cuda") == "uint8"
    assert auto_output("torch", "cpu") == "uint8" and auto_output("torch", "cpu", custom_transform=True) == "float"
    with make_loader(tiny_shards, "val", 8, backend="torch", device="cpu", workers=0, output="auto",
                     image_size=32) as loader:
        batch = next(iter(loader))
        assert loader.output == "uint8" and batch.images.dtype == torch.uint8 and batch.colour is not None
