"""Colour as one affine map per sample: the built-in augmentation's colour jitter and the mean/std normalization
composed into a 3x4 matrix ``[A | b]``, applied once to uint8 images where the model runs.

Every photometric step of the built-in augmentation is affine in RGB (per sample):

- saturation ``s`` and hue ``h`` (degrees): DALI's ``hsv`` operator, a linear map through YIQ,
  ``M = Yiq2Rgb @ R(h) @ S(s) @ Rgb2Yiq`` with DALI's own (float32) constants, so the map reproduces the operator to
  float rounding (``R`` rotates the (I, Q) plane, ``S`` scales it);
- brightness ``b`` and contrast ``c`` around mid-grey 128: ``x -> b (c x + (1 - c) 128)``;
- normalization: ``x -> (x / 255 - mean) / std`` per channel.

Composed in that order (the DALI graph's order: ``hsv``, then brightness and contrast folded into
``crop_mirror_normalize``): ``out = D (b c M x + b (1 - c) 128 - 255 mean)`` with ``D = diag(1 / (255 std))``. The
DALI float graph does not clip between its float stages (``hsv`` writes float), so the single map gives the same
values as the float graph, not an approximation of it. The torch backend's float path (torchvision's ColorJitter on
PIL images) rounds and clips to 0..255 after every step and permutes the order; its uint8 path uses these matrices,
drawn from the same per-sample random numbers as the DALI backends (``augment.draw_params``), so every backend's
uint8 output gets exactly the same colour for the same sample.

:func:`colour_matrices` builds the matrices (numpy, on the host: 12 floats per sample); :func:`apply_colour` applies
them to a uint8 batch on the batch's device (one batched matrix product) and returns float32 (or float16/bfloat16)
images, NCHW or channels_last.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from .augment import AugmentConfig

CONTRAST_CENTER = 128.0  # contrast blends towards mid-grey (DALI's convention; torchvision: the image's mean grey)

# DALI's hsv operator: RGB -> YIQ with these (float32) constants and back with the exact inverse (DALI 2.x: a hue
# of 0 and a saturation of 1 give the identity; older releases used a rounded inverse table). Measured against the
# operator in tests/test_colour.py.
RGB2YIQ = np.array([[.299, .587, .114], [.596, -.274, -.321], [.211, -.523, .311]], dtype=np.float32)
YIQ2RGB = np.linalg.inv(RGB2YIQ.astype(np.float64))


def hsv_matrices(saturation: np.ndarray, hue_degrees: np.ndarray) -> np.ndarray:
    """``[n, 3, 3]`` float64: DALI ``hsv``'s RGB -> RGB map for each sample (``value`` 1)."""
    s = np.asarray(saturation, dtype=np.float64).reshape(-1)
    h = np.asarray(hue_degrees, dtype=np.float64).reshape(-1)
    rad = (h.astype(np.float32) * np.float32(math.pi / 180)).astype(np.float64)
    cos, sin = np.cos(rad).astype(np.float32), np.sin(rad).astype(np.float32)
    inner = np.zeros((len(s), 3, 3))
    inner[:, 0, 0] = 1.0
    inner[:, 1, 1] = cos * s  # R(h) @ S(s): the (I, Q) plane rotated, then scaled
    inner[:, 2, 2] = cos * s
    inner[:, 1, 2] = sin * s
    inner[:, 2, 1] = -sin * s
    return YIQ2RGB @ inner @ RGB2YIQ.astype(np.float64)


def normalization(cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(D, offset)``: the normalization as ``x -> D x + offset`` on 0..255 values (``D`` diagonal, [3, 3])."""
    std = np.asarray(cfg.std, dtype=np.float64)
    mean = np.asarray(cfg.mean, dtype=np.float64)
    return np.diag(1.0 / (255.0 * std)), -mean / std


def colour_matrices(cfg: AugmentConfig, params: np.ndarray | None = None, n: int | None = None) -> np.ndarray:
    """``[n, 3, 4]`` float32: per sample ``[A | b]`` with ``out = A @ rgb + b`` (``rgb`` 0..255 as float, ``out``
    normalized). ``params``: the drawn parameters of :func:`~fastfashion.loading.augment.draw_params` (``[n, 10]``,
    columns :data:`~fastfashion.loading.augment.RAND_FIELDS`), used for a train config with colour jitter; None (or
    an eval config): the normalization alone, ``n`` rows of it."""
    d, offset = normalization(cfg)
    if params is None or not cfg.is_train:
        rows = len(params) if params is not None else int(n or 0)
        out = np.concatenate([d, offset[:, None]], axis=1)
        return np.broadcast_to(out.astype(np.float32), (rows, 3, 4)).copy()
    p = np.asarray(params, dtype=np.float64)
    rows = len(p)
    m = hsv_matrices(p[:, 8], p[:, 9]) if (cfg.saturation or cfg.hue) else np.broadcast_to(np.eye(3), (rows, 3, 3))
    b = p[:, 6] if cfg.brightness or cfg.contrast else np.ones(rows)
    c = p[:, 7] if cfg.brightness or cfg.contrast else np.ones(rows)
    a = d[None] @ (m * (b * c)[:, None, None])
    shift = b * (1.0 - c) * CONTRAST_CENTER  # the same for every channel
    bias = (d @ np.ones(3))[None, :] * shift[:, None] + offset[None, :]
    return np.concatenate([a, bias[:, :, None]], axis=2).astype(np.float32)


def apply_colour(images, colour, *, dtype=None, channels_last: bool | None = None):
    """Finished images from a uint8 batch: ``out[b, :, y, x] = A_b @ images[b, :, y, x] + b_b``, one batched matrix
    product on ``images``' device (the matrices are moved there).

    ``images``: uint8 ``[B, 3, H, W]`` (NCHW strides, or channels_last: an HWC buffer viewed as NCHW); ``colour``:
    ``[B, 3, 4]`` (:func:`colour_matrices`; a torch tensor or numpy array). ``dtype``: the output's (default
    float32; float16/bfloat16 are computed in float32 and rounded once). ``channels_last``: the output's memory
    format (None: that of ``images``). Raises ValueError for shapes that do not match."""
    import torch
    if images.dim() != 4 or images.shape[1] != 3:
        raise ConfigError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    colour = torch.as_tensor(colour).to(images.device, torch.float32, non_blocking=True)
    bsz, _, h, w = images.shape
    if tuple(colour.shape) != (bsz, 3, 4):
        raise ConfigError(f"colour must be [{bsz}, 3, 4] for {bsz} images, got {tuple(colour.shape)}")
    dtype = torch.float32 if dtype is None else dtype
    if channels_last is None:
        channels_last = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    a, bias = colour[:, :, :3], colour[:, :, 3]
    with torch.autocast(images.device.type, enabled=False):  # float32 math under a caller's autocast too
        out = _affine(images, a, bias, channels_last)
    return out if dtype == torch.float32 else out.to(dtype)


def _affine(images, a, bias, channels_last: bool):
    """``A @ x + b`` per sample in float32: one batched matrix product (``baddbmm``) over the pixels, in the
    layout asked for (per output channel fused multiply-adds on the uint8 planes measured slower on the CPU)."""
    import torch
    bsz, _, h, w = images.shape
    if channels_last:  # [B, HW, 3] rows: out = x @ A^T + b
        x = images.permute(0, 2, 3, 1).reshape(bsz, h * w, 3).to(torch.float32)
        return torch.baddbmm(bias[:, None, :], x, a.transpose(1, 2)).view(bsz, h, w, 3).permute(0, 3, 1, 2)
    x = images.reshape(bsz, 3, h * w).to(torch.float32)  # [B, 3, HW] planes: out = A @ x + b
    return torch.baddbmm(bias[:, :, None], a, x).view(bsz, 3, h, w)
