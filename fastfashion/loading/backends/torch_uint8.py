"""The torch backend's uint8 path (``output="uint8"``): one sample's JPEG -> its uint8 HWC image, written into the
batch's buffer; the colour jitter and normalization are left to the colour matrix (:mod:`..colour`).

What it does, per sample, and why it is faster than the float path's torchvision transform on PIL images:

* **Draws**: the crop box, flip and angle of torchvision's ``RandomResizedCrop`` (the config's scale and ratio, up
  to ten tries, then the central fallback), ``RandomHorizontalFlip`` and ``RandomRotation``, in that order, from the
  same per-sample seed (:func:`~fastfashion.loading.augment.sample_seed`) — the same numbers as the float path for
  the same sample — but on a private ``torch.Generator``: seeding and restoring the global RNG
  (``torch.random.fork_rng``) costs ~0.3 ms a sample. The box is drawn from the size in the JPEG header, before
  decoding, so the decoder may decode less.
* **Decode**: ``torchvision.io.decode_jpeg`` (libjpeg-turbo; the same pixels as PIL's decoder, measured identical on
  the real set, and about half PIL's time there, which also pays for its RGB->RGBX unpacking and the copy out of
  PIL). When the crop is at least :data:`DRAFT_FACTOR` times the output on both sides, PIL with ``draft()`` instead:
  libjpeg's DCT scaling decodes at 1/2, 1/4 or 1/8 size (the largest reduction that keeps the crop at least as
  large as the output) and the box is scaled into the reduced image, rounded to whole pixels (a shift of at most
  half a reduced pixel per edge). JPEGs that are not 1- or 3-component, and any that ``decode_jpeg`` refuses, go
  through PIL as on the float path, so a broken JPEG gets PIL's words (:class:`~..base.LoaderError`).
  ``decode_jpeg`` is deprecated since torchvision 0.29 (superseded by TorchCodec): its DeprecationWarning is
  filtered, and without it the PIL decoder takes over.
* **Resize**: torch's uint8 antialiased bilinear resize (``interpolate(antialias=True)`` on a channels_last view:
  PIL's filter, within 1 grey level of PIL's ``resize``, 3-4x faster here).
* **Flip and rotation**: PIL's ``transpose`` and ``rotate`` (nearest, black corners) on the resized image, exactly
  as torchvision's ``RandomHorizontalFlip`` and ``RandomRotation`` on a PIL image (without rotation the flip is the
  copy into the batch).
* **Eval**: the shorter side resized to ``cfg.eval_resize`` (the long side as torchvision computes it) and the
  centre crop (torchvision's offsets); decoded with ``draft()`` when the image is at least :data:`DRAFT_FACTOR`
  times the resized size.

So with colour jitter off and no draft, the finished images equal the float path's within 1 grey level (the two
resize implementations' rounding; tests/test_torch_uint8.py).
"""
from __future__ import annotations

import io
import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from ...format.jpeg import jpeg_header
from ..augment import AugmentConfig, sample_seed
from ..base import LoaderError

DRAFT_FACTOR = 2  # decode at reduced size (JPEG DCT scaling) once the region is at least this times the output


class Plan(NamedTuple):
    """What to make of one decoded image: the region ``[top:top+height, left:left+width]`` resized to ``size``
    (height, width), then ``[crop_top:, crop_left:]`` of the output's size, flipped, rotated by ``angle`` degrees."""

    top: int
    left: int
    height: int
    width: int
    size: tuple[int, int]
    crop_top: int = 0
    crop_left: int = 0
    flip: bool = False
    angle: float = 0.0


class Uint8Sample:
    """Turns one sample's JPEG into its uint8 HWC image for ``cfg`` (see the module docstring); ``draft=False``
    always decodes the full image (the reference the drafted decode is tested against)."""

    def __init__(self, cfg: AugmentConfig, seed: int, draft: bool = True):
        self.cfg, self.seed, self.draft = cfg, seed, draft
        self.log_ratio = [float(v) for v in torch.log(torch.tensor(cfg.ratio))]  # float32, as torchvision's
        self.__setstate__(self.__getstate__())

    def __getstate__(self) -> dict:
        """What a DataLoader worker gets: not the generator (its pickled state is a shared-memory tensor, which a
        forkserver worker failed to map) nor the decoder function; each process makes its own."""
        return {k: v for k, v in vars(self).items() if k not in ("gen", "decode_jpeg")}

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state)
        self.gen, self.decode_jpeg = torch.Generator(), _decode_jpeg()

    def plan(self, index: int, epoch: int, height: int, width: int) -> Plan:
        """The geometry of sample ``index`` in ``epoch`` for an image of ``height`` x ``width`` pixels."""
        oh, ow = self.cfg.hw
        if not self.cfg.is_train:
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.cfg.eval_resize, int(self.cfg.eval_resize * long / short)
            nh, nw = (new_long, new_short) if width <= height else (new_short, new_long)
            return Plan(0, 0, height, width, (nh, nw), int(round((nh - oh) / 2.0)), int(round((nw - ow) / 2.0)))
        g = self.gen
        g.manual_seed(sample_seed(self.seed, epoch, index))
        top, left, h, w = self._crop_box(height, width)
        flip = torch.rand(1, generator=g).item() < self.cfg.flip
        angle = torch.empty(1).uniform_(-self.cfg.rotation, self.cfg.rotation, generator=g).item() \
            if self.cfg.rotation else 0.0
        return Plan(top, left, h, w, (oh, ow), flip=flip, angle=angle)

    def _crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """torchvision's ``RandomResizedCrop.make_params`` (v2), draw for draw, on ``self.gen``."""
        g, (s0, s1), (r0, r1), area = self.gen, self.cfg.scale, self.log_ratio, height * width
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(s0, s1, generator=g).item()
            aspect = torch.exp(torch.empty(1).uniform_(r0, r1, generator=g)).item()
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = torch.randint(0, height - h + 1, size=(1,), generator=g).item()
                left = torch.randint(0, width - w + 1, size=(1,), generator=g).item()
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < min(self.cfg.ratio):
            w, h = width, int(round(width / min(self.cfg.ratio)))
        elif in_ratio > max(self.cfg.ratio):
            w, h = int(round(height * max(self.cfg.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, jpg: bytes, where: str, index: int, epoch: int, out: np.ndarray) -> None:
        """Write sample ``index``'s image (``epoch``'s augmentation) into ``out`` (uint8 [H, W, 3]). Raises
        :class:`LoaderError` starting with ``where`` (shard and key) when the JPEG cannot be decoded."""
        header = jpeg_header(lambda offset, n: jpg[offset:offset + n], len(jpg))
        if isinstance(header, str):  # refused when the split was opened, unless it changed since: PIL decodes it
            image, scale = _pil_decode(jpg, where, None)  # or says why not, in the float path's words
            p = self.plan(index, epoch, *image.shape[:2])
        else:
            p = self.plan(index, epoch, header.height, header.width)
            if self.draft and p.height >= DRAFT_FACTOR * p.size[0] and p.width >= DRAFT_FACTOR * p.size[1]:
                # the smallest DCT-scaled size at which the region still covers the output
                image, scale = _pil_decode(jpg, where, (math.ceil(header.width * p.size[1] / p.width),
                                                        math.ceil(header.height * p.size[0] / p.height)))
            else:
                image, scale = self._decode_full(jpg, where, header.components), 1
        if scale != 1:  # the region in the reduced image, whole pixels
            top, left = round(p.top / scale), round(p.left / scale)
            bottom = min(round((p.top + p.height) / scale), image.shape[0])
            right = min(round((p.left + p.width) / scale), image.shape[1])
            region = image[top:bottom, left:right]
        else:
            region = image[p.top:p.top + p.height, p.left:p.left + p.width]
        oh, ow = self.cfg.hw
        resized = _resize(region, p.size)[p.crop_top:p.crop_top + oh, p.crop_left:p.crop_left + ow].numpy()
        if p.angle:
            _rotate_into(resized, p.flip, p.angle, out)
        else:
            out[...] = resized[:, ::-1] if p.flip else resized

    def _decode_full(self, jpg: bytes, where: str, components: int) -> torch.Tensor:
        if self.decode_jpeg is not None and components in (1, 3):
            try:
                return self.decode_jpeg(torch.frombuffer(bytearray(jpg), dtype=torch.uint8),
                                        mode=_RGB).permute(1, 2, 0)
            except RuntimeError:  # PIL decodes it or says why not, in the float path's words
                pass
        return _pil_decode(jpg, where, None)[0]


_RGB = None  # torchvision.io.ImageReadMode.RGB, set with the decoder


def _decode_jpeg():
    """``torchvision.io.decode_jpeg`` (its deprecation warning filtered), or None where torchvision has none."""
    global _RGB
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision are "
                            "deprecated", category=DeprecationWarning)
    _RGB = ImageReadMode.RGB
    return decode_jpeg


def _pil_decode(jpg: bytes, where: str, reduce_to: tuple[int, int] | None) -> tuple[torch.Tensor, float]:
    """``(HWC uint8 image, scale)`` decoded by PIL, at ``1/scale`` of the full size when ``reduce_to`` (width,
    height) asks for a DCT-scaled decode (``draft``). Raises :class:`LoaderError` (``where`` and PIL's first line)."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(jpg)) as im:
            full_width = im.size[0]
            drafted = im.draft("RGB", reduce_to) if reduce_to is not None else None
            rgb = im.convert("RGB") if im.mode != "RGB" else im
            array = np.array(rgb)  # writable (torch warns on a read-only one); a copy of a reduced or rare image
    except Exception as e:  # noqa: BLE001 - untrusted bytes: any decoder failure (DecompressionBombError ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LoaderError(f"{where}: {first}") from e
    scale = full_width / drafted[1][2] if drafted is not None else 1
    return torch.from_numpy(array), scale


def _resize(hwc: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``hwc`` (uint8 [h, w, 3], any strides) resized to ``size`` (height, width), antialiased bilinear, as uint8
    [H, W, 3] (contiguous): torch's uint8 kernel on a channels_last batch of one."""
    x = hwc.permute(2, 0, 1)[None].contiguous(memory_format=torch.channels_last)
    if tuple(x.shape[2:]) == tuple(size):
        return hwc
    y = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return y[0].permute(1, 2, 0)


def _rotate_into(hwc: np.ndarray, flip: bool, angle: float, out: np.ndarray) -> None:
    """``out`` = ``hwc`` flipped (if ``flip``) and rotated by ``angle`` degrees counter-clockwise about its centre,
    nearest neighbour, black corners: torchvision's ``RandomHorizontalFlip`` then ``RandomRotation`` on PIL."""
    from PIL import Image
    im = Image.fromarray(np.ascontiguousarray(hwc))
    if flip:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out[...] = np.asarray(im.rotate(angle, Image.Resampling.NEAREST, expand=False, fillcolor=(0, 0, 0)))
