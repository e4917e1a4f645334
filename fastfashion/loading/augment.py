"""Augmentation parameters: one frozen config drives the DALI (GPU and CPU) and torch backends alike.

``image_size`` is an int (a square) or ``(height, width)``; :func:`check_image_size` accepts both.

Train: a random resized crop to ``image_size`` (area ``scale``, aspect ``ratio``, as torchvision's
RandomResizedCrop), a horizontal flip with probability ``flip``, a rotation by ``U(-rotation, rotation)`` degrees
(black fill), colour jitter (``brightness``, ``contrast``, ``saturation`` factors drawn from ``U(1-x, 1+x)``, ``hue``
shift from ``U(-hue, hue)`` of a full turn) and ImageNet mean/std normalization.

Eval: resize the shorter side to ``round(max(height, width) / eval_crop_ratio)`` (256 for 224: the ImageNet
convention, 0.875) and centre-crop ``image_size``; then normalize. A solid-colour image stays exactly that colour,
which the alignment tests rely on.

Where the backends differ on purpose (documented in ``docs/loader.md``): DALI fuses crop, resize, rotation and flip
into one affine warp, and its crop box is clamped to the image instead of re-sampled up to ten times. A rotated
crop's corners: on DALI-CPU black, as in torchvision (only the crop is decoded, so the warp fills outside it with
black); on DALI-GPU image content from outside the crop where the image has it (the whole image is decoded, for
the decoder cache). Contrast blends towards mid-grey 128 instead of the image's mean grey, and the jitter order is
fixed — saturation, hue (``hsv``), then brightness, contrast (folded into the normalization) — where torchvision
permutes it.
"""
from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from ..errors import ConfigError

MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 1024  # a 1024 px float32 batch of 64 is already 800 MB; the data set's images are 300 px tall
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_image_size(size) -> int | tuple[int, int]:
    """``size`` as an int (a square) or a ``(height, width)`` tuple of ints, each in
    :data:`MIN_IMAGE_SIZE`..:data:`MAX_IMAGE_SIZE`; a pair of equal sides stays a pair. Raises ValueError."""
    sides = list(size) if isinstance(size, (tuple, list)) else [size]
    if len(sides) not in (1, 2) or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in sides):
        raise ConfigError(f"image_size must be an int or (height, width), got {size!r}")
    if not all(MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE for v in sides):
        raise ConfigError(f"image_size must be in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}, got {size!r}")
    return int(sides[0]) if not isinstance(size, (tuple, list)) else (int(sides[0]), int(sides[-1]))


def parse_image_size(text: str) -> int | tuple[int, int]:
    """``"224"`` -> 224, ``"64x48"`` or ``"64,48"`` -> (64, 48) (height x width), checked by
    :func:`check_image_size`. Raises ValueError."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?", text)
    if m is None:
        raise ConfigError(f"image size {text!r} is not N or HEIGHTxWIDTH (e.g. 224 or 64x48)")
    return check_image_size(int(m.group(1)) if m.group(2) is None else (int(m.group(1)), int(m.group(2))))


def image_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of an image size."""
    return (size, size) if isinstance(size, int) else (size[0], size[1])


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Every augmentation knob; ``mode="eval"`` is the deterministic eval transform (the random knobs unused)."""

    image_size: int | tuple[int, int] = 224       # a square, or (height, width)
    mode: str = "train"                           # "train": random augmentation; "eval": resize + centre crop
    scale: tuple[float, float] = (0.08, 1.0)      # crop area fraction (torchvision's default)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)   # crop aspect ratio range, sampled log-uniformly
    flip: float = 0.5                             # horizontal flip probability
    rotation: float = 15.0                        # max |angle| in degrees (the seed's RandomRotation(15))
    brightness: float = 0.2                       # factor in U(1-b, 1+b)
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05                             # shift in U(-h, h) turns (torchvision's ColorJitter convention)
    eval_crop_ratio: float = 0.875                # eval: resize shorter side to image_size / ratio, centre crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interp: str = "auto"                          # warp interpolation "linear" or "nearest"; auto: linear on
    #                                               GPU, nearest on CPU (DALI's CPU linear warp: ~5x the cost)
    fp16: bool = False                            # images as float16 (DALI backends; halves the output bandwidth)

    def __post_init__(self) -> None:
        if self.mode not in ("train", "eval"):
            raise ConfigError(f"mode must be 'train' or 'eval', got {self.mode!r}")
        object.__setattr__(self, "image_size", check_image_size(self.image_size))
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ConfigError(f"scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"ratio must satisfy 0 < lo <= hi, got {self.ratio}")
        if not 0 <= self.flip <= 1:
            raise ConfigError(f"flip is a probability, got {self.flip}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ConfigError(f"hue must be in [0, 0.5], got {self.hue}")
        if not 0 < self.eval_crop_ratio <= 1:
            raise ConfigError(f"eval_crop_ratio must be in (0, 1], got {self.eval_crop_ratio}")
        if self.interp not in ("auto", "linear", "nearest"):
            raise ConfigError(f"interp must be auto, linear or nearest, got {self.interp!r}")

    @classmethod
    def train(cls, **kw) -> AugmentConfig:
        """The full train augmentation (overrides in ``kw``)."""
        return cls(mode="train", **kw)

    @classmethod
    def eval(cls, **kw) -> AugmentConfig:
        """The deterministic eval transform (resize shorter side, centre crop, normalize)."""
        return cls(mode="eval", **kw)

    @property
    def is_train(self) -> bool:
        return self.mode == "train"

    @property
    def hw(self) -> tuple[int, int]:
        """``(height, width)`` of the output."""
        return image_hw(self.image_size)

    @property
    def eval_resize(self) -> int:
        """Shorter side before the eval centre crop (256 for 224; for (height, width) the longer of the two)."""
        return int(round(max(self.hw) / self.eval_crop_ratio))

    def interp_for(self, device: str) -> str:
        """The warp interpolation used on ``device`` ("cpu" or "gpu")."""
        if self.interp != "auto":
            return self.interp
        return "linear" if device == "gpu" else "nearest"

    @property
    def photometric(self) -> bool:
        """Whether any colour jitter is on."""
        return bool(self.brightness or self.contrast or self.saturation or self.hue)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_FIELDS_MAX = 64  # random numbers per sample at most (the DALI graph draws 10)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijective scramble of uint64 values (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _base(seed: int, epoch: int) -> np.uint64:
    with np.errstate(over="ignore"):
        return _mix(np.array([(seed & 0xFFFFFFFF) << 32 | (epoch & 0xFFFFFFFF)], dtype=np.uint64) * _GOLDEN)[0]


def sample_uniforms(seed: int, epoch: int, indices, n: int) -> np.ndarray:
    """``[len(indices), n]`` uniforms in [0, 1): the augmentation randomness of each sample, a pure function of
    ``(seed, epoch, sample index)``. It does not depend on the rank, the batch a sample lands in, the worker that
    decodes it or where a run was resumed, so a resumed or re-sharded run augments every sample as an uninterrupted
    one would (counter-based: splitmix64 of a per-sample counter, vectorised)."""
    if not 0 < n <= _FIELDS_MAX:
        raise ConfigError(f"n must be in 1..{_FIELDS_MAX}, got {n}")
    idx = np.asarray(indices, dtype=np.uint64).reshape(-1, 1)
    with np.errstate(over="ignore"):
        counter = (idx * np.uint64(_FIELDS_MAX) + np.arange(n, dtype=np.uint64)[None, :]) * _GOLDEN + _base(seed, epoch)
        z = _mix(counter)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


# The per-sample random parameters of the built-in train augmentation, in this order (one row per sample)
RAND_FIELDS = ("area", "logratio", "x", "y", "flip", "angle", "brightness", "contrast", "saturation", "hue")


def draw_params(cfg: AugmentConfig, seed: int, epoch: int, indices) -> np.ndarray:
    """``[len(indices), len(RAND_FIELDS)]`` float32: each sample's augmentation parameters from
    :func:`sample_uniforms` (``area``, ``x``, ``y`` stay uniforms: the DALI graph maps them with each image's shape;
    ``logratio`` log aspect ratio, ``flip`` 0/1, ``angle`` degrees, ``brightness``/``contrast``/``saturation``
    factors, ``hue`` degrees). Every backend's colour for a sample comes from this row."""
    u = sample_uniforms(seed, epoch, indices, len(RAND_FIELDS))
    out = u.copy()
    out[:, 1] = math.log(cfg.ratio[0]) + u[:, 1] * (math.log(cfg.ratio[1]) - math.log(cfg.ratio[0]))
    out[:, 0] = cfg.scale[0] + u[:, 0] * (cfg.scale[1] - cfg.scale[0])
    out[:, 4] = u[:, 4] < cfg.flip
    out[:, 5] = (2 * u[:, 5] - 1) * cfg.rotation
    for j, x in ((6, cfg.brightness), (7, cfg.contrast), (8, cfg.saturation)):
        out[:, j] = 1 + (2 * u[:, j] - 1) * x
    out[:, 9] = (2 * u[:, 9] - 1) * cfg.hue * 360.0  # degrees, as DALI's hsv wants
    return out.astype(np.float32)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` in ``epoch`` (for libraries that draw their own random numbers, such as
    torchvision's transforms), from the same counter as :func:`sample_uniforms`."""
    with np.errstate(over="ignore"):
        z = _mix(np.array([index], dtype=np.uint64) * np.uint64(_FIELDS_MAX) * _GOLDEN + _base(seed, epoch)
                 + np.uint64(_FIELDS_MAX - 1))
    return int(z[0] >> np.uint64(1))
