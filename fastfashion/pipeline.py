"""The DALI graph — one function, ``device="gpu"`` (decode ``mixed``, everything after on the GPU) or ``"cpu"`` —
and :class:`DaliEpochs`, which feeds it an exact per-epoch order through per-epoch index files.

Reading. ``fn.readers.webdataset`` takes ``paths`` and one ``index_paths`` file per path, and reads the samples of
each index file in the order listed, seeking to each member's offset (checked in DALI's
``webdataset_loader.cc``: offsets need not increase, and the same tar may appear in ``paths`` any number of times;
DALI maps each distinct file once). So for every epoch the loader cuts this rank's order (:mod:`fastfashion.order`)
into runs of consecutive samples from one shard and writes one small index file per run, copying the shard's own
``.idx`` lines; ``random_shuffle`` stays off. With the default shuffle block of 8 that is ~N/8 entries per epoch —
a full blocked reshuffle every epoch with the native reader, no Python callback per sample. The index files of
``horizon`` epochs are concatenated into one pipeline; each epoch is padded to whole batches (the padding is
trimmed, never delivered), so a pipeline lives across epochs and on the GPU keeps its decoder cache.

Train graph (operators picked by measurement on 2 CPU cores, see docs/loader.md)::

    CPU: jpg ─ decoders.image_crop (decodes only the crop box) ────┐
    GPU: jpg ─ decoders.image(mixed, decoder cache) ─ crop box ────┴─ warp_affine(crop → size², flip, rotation:
        ONE matrix) ─ hsv(saturation, hue; float out) ─ crop_mirror_normalize(per-sample mean/std that also apply
        brightness and contrast; CHW)

Eval graph: ``decoders.image ─ resize(shorter side) ─ crop_mirror_normalize(centre crop)``.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from typing import Sequence

import numpy as np

from .augment import AugmentConfig
from .order import pad_to_batch, runs
from .validate import default_workers

log = logging.getLogger(__name__)

CONTRAST_CENTER = 128.0  # contrast blends towards mid-grey (DALI's convention; torchvision: the image's mean grey)


# Per-sample random parameters, drawn in numpy once per batch (one callback per batch, none per sample) from
# (seed, rank, epoch, batch): augmentation is a pure function of those, whichever pipeline (horizon) produces it.
RAND_FIELDS = ("area", "logratio", "x", "y", "flip", "angle", "brightness", "contrast", "saturation", "hue")


class RandomParams:
    """The ``external_source`` callback: iteration ``i`` of the pipeline -> ``[B, len(RAND_FIELDS)]`` float32."""

    def __init__(self, cfg: AugmentConfig, *, seed: int, rank: int, batch_size: int,
                 plan: Sequence[tuple[int, int]]):
        self.cfg, self.seed, self.rank, self.batch_size = cfg, seed, rank, batch_size
        self.plan = list(plan)  # (epoch, batches in that epoch) in pipeline order

    def where(self, iteration: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of a pipeline iteration (past the plan: the last epoch continues)."""
        for epoch, n in self.plan:
            if iteration < n:
                return epoch, iteration
            iteration -= n
        epoch, n = self.plan[-1]
        return epoch, n + iteration

    def draw(self, epoch: int, batch: int) -> np.ndarray:
        c = self.cfg
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.rank, epoch, batch, 0xA06])
        u = rng.random((self.batch_size, len(RAND_FIELDS)))
        out = u.copy()  # area, logratio, x, y stay uniforms: the graph maps them with each image's shape
        out[:, 1] = math.log(c.ratio[0]) + u[:, 1] * (math.log(c.ratio[1]) - math.log(c.ratio[0]))
        out[:, 0] = c.scale[0] + u[:, 0] * (c.scale[1] - c.scale[0])
        out[:, 4] = u[:, 4] < c.flip
        out[:, 5] = (2 * u[:, 5] - 1) * c.rotation
        for j, x in ((6, c.brightness), (7, c.contrast), (8, c.saturation)):
            out[:, j] = 1 + (2 * u[:, j] - 1) * x
        out[:, 9] = (2 * u[:, 9] - 1) * c.hue * 360.0  # degrees, as fn.hsv wants
        return out.astype(np.float32)

    def __call__(self, info) -> np.ndarray:
        return self.draw(*self.where(info.iteration))


def _crop_box(shape, r):
    """Random resized crop box ``(x0, y0, w, h)`` in input pixels from the image ``shape`` (HWC, float) and the
    drawn area fraction and log aspect ratio: one draw clamped to the image, where torchvision re-draws up to ten
    times."""
    import nvidia.dali.math as dmath
    h_img, w_img = shape[0], shape[1]
    area = r[0] * w_img * h_img
    aspect = dmath.exp(r[1])
    w = dmath.floor(dmath.min(dmath.sqrt(area * aspect), w_img))
    h = dmath.floor(dmath.min(dmath.sqrt(area / aspect), h_img))
    return r[2] * (w_img - w), r[3] * (h_img - h), w, h


def _affine(box, r, cfg: AugmentConfig):
    """Per-sample 2x3 forward matrix (input pixels -> output pixels): the crop ``box`` ``(x0, y0, w, h)`` onto the
    ``image_size`` square, mirrored when ``r[4]``, rotated about the centre by ``r[5]`` degrees."""
    from nvidia.dali import fn
    s = float(cfg.image_size)
    x0, y0, w, h = box
    flip = r[4]
    zero = flip * 0.0
    m = fn.transforms.crop(from_start=fn.stack(x0 + zero, y0 + zero), from_end=fn.stack(x0 + w, y0 + h),
                           to_start=fn.stack(flip * s, zero), to_end=fn.stack((1.0 - flip) * s, zero + s))
    if cfg.rotation:
        m = fn.transforms.rotation(m, angle=r[5], center=[s / 2, s / 2])
    return m


def _eval_size(jpg, cfg: AugmentConfig):
    """(height, width) with the shorter side ``cfg.eval_resize`` and the longer one truncated as torchvision's
    Resize does (``resize_shorter`` rounds instead: a 0.3 % scale difference shows on fine textures)."""
    from nvidia.dali import fn, types
    import nvidia.dali.math as dmath
    shape = fn.cast(fn.peek_image_shape(jpg), dtype=types.FLOAT)
    scale = cfg.eval_resize / dmath.min(shape[0], shape[1])
    return dmath.floor(shape[0] * scale + 1e-3), dmath.floor(shape[1] * scale + 1e-3)


def _centre_pos(length, crop: int):
    """crop_pos_x/y putting the crop where torchvision's CenterCrop does: ``int(round((L - crop) / 2))`` with
    Python's round-half-to-even (a one-pixel shift on odd margins is visible on textures). The +0.25 keeps the
    anchor on that pixel whether DALI rounds or truncates ``pos * (L - crop)``."""
    import nvidia.dali.math as dmath
    d = length - float(crop)
    q = dmath.floor(d * 0.5)
    top = q + (d - 2.0 * q) * (q - 2.0 * dmath.floor(q * 0.5))  # half-to-even of d / 2
    return (top + 0.25) / dmath.max(d, 1.0)


def _normalization(cfg: AugmentConfig, r=None):
    """Per-sample (mean, std) for crop_mirror_normalize that also apply brightness b and contrast c:
    ``(b * (c * x + (1 - c) * 128) - m) / s == (x - m') / s'`` with ``s' = s / (b c)``,
    ``m' = (m - b (1 - c) 128) / (b c)`` — two photometric ops for free."""
    from nvidia.dali import fn
    mean = [255.0 * v for v in cfg.mean]
    std = [255.0 * v for v in cfg.std]
    if r is None or not (cfg.brightness or cfg.contrast):
        return mean, std
    b, c = r[6], r[7]
    bc = b * c
    shift = b * ((1.0 - c) * CONTRAST_CENTER)
    return fn.stack(*[(m - shift) / bc for m in mean]), fn.stack(*[v / bc for v in std])


def fashion_pipeline(*, paths: Sequence[str], index_paths: Sequence[str], cfg: AugmentConfig, batch_size: int,
                     device_id: int | None, num_threads: int, seed: int, prefetch: int = 2, cache_mb: int = 0,
                     size_hint: tuple[int, int] = (0, 0), roi_decode: bool | None = None,
                     random_params: RandomParams | None = None):
    """Build (not run) the DALI pipeline. ``device_id=None``: every operator on the CPU; else decode ``mixed``
    and the rest on GPU ``device_id``. Outputs: images float[16] ``[B,3,S,S]`` normalized, labels int64 ``[B,6]``.
    ``cache_mb`` > 0 (GPU only) keeps decoded images in the decoder's cache; ``size_hint`` is (height, width) of
    the largest expected image, to preallocate decoder buffers. ``roi_decode`` (default: on CPU only) picks the
    train crop strategy: decode only the crop, or decode everything (GPU: cacheable) and warp the crop box.
    ``random_params`` (required for train) supplies the per-sample random numbers."""
    from nvidia.dali import fn, pipeline_def, types
    gpu = device_id is not None
    dev = "gpu" if gpu else "cpu"
    roi_decode = (not gpu) if roi_decode is None else roi_decode

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                  prefetch_queue_depth=prefetch, exec_dynamic=True)  # dynamic executor: zero-copy to torch
    def graph():
        jpg, lbl = fn.readers.webdataset(paths=list(paths), index_paths=list(index_paths), ext=["jpg", "lbl"],
                                         dtypes=[types.UINT8, types.INT64], random_shuffle=False,
                                         missing_component_behavior="error", name="reader")
        dec = dict(device="mixed" if gpu else "cpu", output_type=types.RGB, jpeg_fancy_upsampling=True)
        if gpu:
            dec.update(hw_decoder_load=0.65,  # share of JPEGs for the A100/H100 hardware decoder, rest on CUDA
                       preallocate_height_hint=size_hint[0], preallocate_width_hint=size_hint[1],
                       device_memory_padding=16 << 20, host_memory_padding=8 << 20)
            if cache_mb:
                dec.update(cache_size=cache_mb, cache_type="threshold", cache_threshold=0, cache_batch_copy=True)
        out_dtype = types.FLOAT16 if cfg.fp16 else types.FLOAT
        if cfg.is_train:
            if random_params is None:
                raise ValueError("the train graph needs random_params")
            r = fn.external_source(source=random_params, batch=True, batch_info=True, dtype=types.FLOAT,
                                   ndim=1, name="random_params")
            box = _crop_box(fn.cast(fn.peek_image_shape(jpg), dtype=types.FLOAT), r)  # header only, no decode
            if roi_decode:  # decode only the crop: ~0.15 ms/img less on CPU
                x0, y0, w, h = box
                img = fn.decoders.image_crop(jpg, **dec, crop_w=w, crop_h=h, crop_pos_x=r[2], crop_pos_y=r[3])
                shape = fn.cast(img.shape(), dtype=types.FLOAT)
                box = (0.0, 0.0, shape[1], shape[0])
            else:  # GPU: nvJPEG decodes whole images cheaply, and only full decodes can live in the decoder cache
                img = fn.decoders.image(jpg, **dec)
            interp = types.INTERP_LINEAR if cfg.interp_for(dev) == "linear" else types.INTERP_NN
            img = fn.warp_affine(img, matrix=_affine(box, r, cfg), size=[cfg.image_size, cfg.image_size],
                                 inverse_map=False, interp_type=interp, fill_value=0)
            if cfg.saturation or cfg.hue:
                # float output: DALI's CPU float->uint8 saturating cast costs more than the colour matrix itself
                img = fn.hsv(img, hue=r[9], saturation=r[8], dtype=types.FLOAT)
            mean, std = _normalization(cfg, r)
            img = fn.crop_mirror_normalize(img, mean=mean, std=std, dtype=out_dtype, output_layout="CHW")
        else:
            img = fn.decoders.image(jpg, **dec)
            h, w = _eval_size(jpg, cfg)
            img = fn.resize(img, size=fn.stack(h, w), interp_type=types.INTERP_LINEAR, antialias=True)
            mean, std = _normalization(cfg)
            img = fn.crop_mirror_normalize(img, crop=[cfg.image_size, cfg.image_size],
                                           crop_pos_x=_centre_pos(w, cfg.image_size),
                                           crop_pos_y=_centre_pos(h, cfg.image_size), mean=mean, std=std,
                                           dtype=out_dtype, output_layout="CHW")
        return img, (lbl.gpu() if gpu else lbl)

    return graph()


def _index_dir() -> str | None:
    """Where per-epoch index files go: tmpfs when there is one (creating 600 files there takes 13 ms, on the
    disk-backed /tmp of the team machine 240 ms), else the default temporary folder."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


class DaliEpochs:
    """Owns the DALI pipeline of one loader: writes per-epoch index files, (re)builds the pipeline, runs it.

    ``shards`` lists ``(tar_path, idx_lines)`` per shard (``idx_lines[i]`` is the shard's ``.idx`` line of its
    i-th sample). :meth:`epoch` yields ``(images, labels, global indices)`` torch batches of one epoch.
    """

    def __init__(self, shards: Sequence[tuple[str, list[str]]], cfg: AugmentConfig, *, batch_size: int,
                 device_id: int | None, seed: int, rank: int, horizon: int, cache_mb: int = 0,
                 num_threads: int | None = None, size_hint: tuple[int, int] = (0, 0),
                 roi_decode: bool | None = None):
        self.shards, self.cfg, self.batch_size = list(shards), cfg, batch_size
        self.sizes = [len(lines) for _, lines in self.shards]
        self.device_id, self.seed, self.rank, self.horizon = device_id, seed, rank, max(1, horizon)
        self.cache_mb, self.size_hint, self.roi_decode = cache_mb, size_hint, roi_decode
        self.num_threads = num_threads or default_workers()  # on CPU: one thread per core
        self._pipe = None
        self._plan: dict[int, int] = {}  # epoch -> its index in the current pipeline's sequence of epochs
        self._next: int | None = None  # the epoch whose first batch the pipeline produces next (None: unknown)
        self._dir = tempfile.mkdtemp(prefix="fastfashion-dali-", dir=_index_dir())

    def close(self) -> None:
        self._pipe = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self):
        self.close()

    def _build(self, epochs: list[tuple[int, np.ndarray]]) -> None:
        """A pipeline reading the (padded) orders of ``epochs`` back to back."""
        self._pipe = None
        for f in os.listdir(self._dir):
            os.unlink(os.path.join(self._dir, f))
        seq = np.concatenate([pad_to_batch(idx, self.batch_size) for _, idx in epochs])
        paths, index_paths = [], []
        for j, (shard, local) in enumerate(runs(seq, self.sizes)):
            tar, lines = self.shards[shard]
            ip = os.path.join(self._dir, f"{j:07d}.idx")
            with open(ip, "w") as f:
                f.write(f"v1.2 {len(local)}\n")
                f.write("".join(lines[i] + "\n" for i in local))
            paths.append(tar)
            index_paths.append(ip)
        first = epochs[0][0]
        plan = [(e, len(pad_to_batch(idx, self.batch_size)) // self.batch_size) for e, idx in epochs]
        rand = RandomParams(self.cfg, seed=self.seed, rank=self.rank, batch_size=self.batch_size, plan=plan)
        self._pipe = fashion_pipeline(paths=paths, index_paths=index_paths, cfg=self.cfg,
                                      batch_size=self.batch_size, device_id=self.device_id,
                                      num_threads=self.num_threads,
                                      seed=(self.seed * 1_000_003 + first * 7919 + self.rank) % (2 ** 31),
                                      cache_mb=self.cache_mb, size_hint=self.size_hint,
                                      roi_decode=self.roi_decode, random_params=rand)
        self._pipe.build()
        self._plan = {e: k for k, (e, _) in enumerate(epochs)}
        self._next = first
        log.debug("DALI pipeline for epochs %s: %d reader entries", list(self._plan), len(paths))

    def epoch(self, epoch: int, indices: np.ndarray, order_of):
        """Yield ``(images, labels, indices)`` for ``epoch``; ``order_of(e)`` gives any epoch's indices."""
        if len(indices) == 0:
            return
        if self._pipe is None or self._next != epoch:
            self._build([(e, indices if e == epoch else order_of(e)) for e in range(epoch, epoch + self.horizon)])
        self._next = None  # mid-epoch until the last batch is out
        from nvidia.dali.plugin.pytorch.torch_utils import to_torch_tensor
        n, b = len(indices), self.batch_size
        for a in range(0, n, b):
            try:
                images, labels = self._pipe.run()
                x = to_torch_tensor(images.as_tensor(), copy=False)  # zero-copy (DLPack)
                y = to_torch_tensor(labels.as_tensor(), copy=False)
            except RuntimeError as e:
                self._pipe = None
                raise DaliBatchError(indices[a:a + b], e) from e
            k = min(b, n - a)
            yield (x[:k], y[:k], indices[a:a + k]) if k < b else (x, y, indices[a:a + k])
        nxt = epoch + 1
        self._next = nxt if nxt in self._plan else None


class DaliBatchError(RuntimeError):
    """DALI failed while producing the batch of these global indices (the loader names the culprit)."""

    def __init__(self, indices: np.ndarray, cause: BaseException):
        self.indices, self.cause = indices, cause
        super().__init__(str(cause))
