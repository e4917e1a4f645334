"""The DALI graph: one function, ``device_id`` set (decode ``mixed``, everything after on the GPU) or None (every
operator on the CPU). :mod:`fastfashion.loading.backends.dali` feeds it an exact per-epoch order.

Train graph (operators picked by measurement on 2 CPU cores, see docs/loader.md)::

    CPU: jpg ─ decoders.image_crop (decodes only the crop box) ────┐
    GPU: jpg ─ decoders.image(mixed, decoder cache) ─ crop box ────┴─ warp_affine(crop → size², flip, rotation:
        ONE matrix) ─ hsv(saturation, hue; float out) ─ crop_mirror_normalize(per-sample mean/std that also apply
        brightness and contrast; CHW)

Eval graph: ``decoders.image ─ resize(shorter side) ─ crop_mirror_normalize(centre crop)``.

uint8 output (``colour=``): the train graph ends at ``warp_affine`` and the eval graph at ``crop`` (HWC uint8); a
third output carries each sample's ``[3, 4]`` colour matrix (saturation, hue, brightness, contrast and the
normalization in one map: :mod:`fastfashion.loading.colour`), applied where the model runs.

With ``augment=`` a callable, the graph is ``decoders.image ─ callable(images, labels)``: the user's operators,
on the GPU for dali-gpu (``mixed`` decode), on the CPU for dali-cpu.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..augment import AugmentConfig, draw_params
from ..colour import CONTRAST_CENTER, colour_matrices
from .jpeg_engine import DEFAULT_HW_DECODER_LOAD

# Per-sample random parameters, drawn in numpy once per batch (one callback per batch, none per sample): each
# sample's from (seed, epoch, sample index) (augment.sample_uniforms), so augmentation does not depend on the rank,
# the pipeline (horizon) that produces it or where a run resumed.


class _Planned:
    """An ``external_source`` callback that knows which samples each pipeline iteration reads.

    ``plan``: ``(epoch, padded indices)`` of each epoch the pipeline reads, in order (what its index files list)."""

    def __init__(self, *, batch_size: int, plan: Sequence[tuple[int, np.ndarray]]):
        self.batch_size = batch_size
        self.plan = [(e, np.asarray(idx, dtype=np.int64)) for e, idx in plan]

    def where(self, iteration: int) -> tuple[int, np.ndarray]:
        """(epoch, sample indices) of a pipeline iteration (past the plan, prefetching: the last batch again)."""
        b = self.batch_size
        for epoch, idx in self.plan:
            n = len(idx) // b
            if iteration < n:
                return epoch, idx[iteration * b:(iteration + 1) * b]
            iteration -= n
        epoch, idx = self.plan[-1]
        return epoch, idx[-b:]


class RandomParams(_Planned):
    """The ``external_source`` callback: iteration ``i`` of the pipeline -> ``[B, len(RAND_FIELDS)]`` float32
    (:func:`~fastfashion.loading.augment.draw_params`)."""

    def __init__(self, cfg: AugmentConfig, *, seed: int, batch_size: int, plan: Sequence[tuple[int, np.ndarray]]):
        super().__init__(batch_size=batch_size, plan=plan)
        self.cfg, self.seed = cfg, seed

    def draw(self, epoch: int, indices: np.ndarray) -> np.ndarray:
        return draw_params(self.cfg, self.seed, epoch, indices)

    def __call__(self, info) -> np.ndarray:
        return self.draw(*self.where(info.iteration))


class ColourParams(RandomParams):
    """The uint8 graph's colour output: iteration ``i`` -> ``[B, 3, 4]`` float32, each sample's colour matrix
    (:func:`~fastfashion.loading.colour.colour_matrices`: the jitter drawn from the same parameters as
    :class:`RandomParams`, and the normalization; for eval the normalization alone)."""

    def __call__(self, info) -> np.ndarray:
        epoch, indices = self.where(info.iteration)
        params = self.draw(epoch, indices) if self.cfg.is_train else None
        return colour_matrices(self.cfg, params, len(indices))


class PlannedLabels(_Planned):
    """The labels of a set whose label member is not ``.lbl`` (decoded when the split was read): iteration ``i``
    -> ``[B, len(schema)]`` int64, the samples the reader delivers in that iteration."""

    def __init__(self, labels, *, batch_size: int, plan: Sequence[tuple[int, np.ndarray]]):
        super().__init__(batch_size=batch_size, plan=plan)
        self.labels = np.ascontiguousarray(np.asarray(labels, dtype=np.int64).reshape(len(labels), -1))

    def __call__(self, info) -> np.ndarray:
        return self.labels[self.where(info.iteration)[1]]


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
    ``image_size`` rectangle, mirrored when ``r[4]``, rotated about the centre by ``r[5]`` degrees."""
    from nvidia.dali import fn
    sh, sw = (float(v) for v in cfg.hw)
    x0, y0, w, h = box
    flip = r[4]
    zero = flip * 0.0
    m = fn.transforms.crop(from_start=fn.stack(x0 + zero, y0 + zero), from_end=fn.stack(x0 + w, y0 + h),
                           to_start=fn.stack(flip * sw, zero), to_end=fn.stack((1.0 - flip) * sw, zero + sh))
    if cfg.rotation:
        m = fn.transforms.rotation(m, angle=r[5], center=[sw / 2, sh / 2])
    return m


def _eval_size(jpg, cfg: AugmentConfig):
    """(height, width) with the shorter side ``cfg.eval_resize`` and the longer one truncated as torchvision's
    Resize does (``resize_shorter`` rounds instead: a 0.3 % scale difference shows on fine textures)."""
    import nvidia.dali.math as dmath
    from nvidia.dali import fn, types
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


def _decoder_args(gpu: bool, size_hint: tuple[int, int], hw_decoder_load: float) -> dict:
    """Arguments of the image decoder: ``mixed`` on the GPU (the hardware decoder's share ``hw_decoder_load``,
    preallocation, decoder cache). Arguments every decoder takes (``decoders.image`` and ``decoders.image_crop``)
    except the cache ones, which only ``decoders.image`` accepts: :func:`_cache_args`."""
    from nvidia.dali import types
    dec = dict(device="mixed" if gpu else "cpu", output_type=types.RGB, jpeg_fancy_upsampling=True)
    if gpu:
        dec.update(hw_decoder_load=hw_decoder_load,  # share of JPEGs for the A100/H100 hardware decoder
                   preallocate_height_hint=size_hint[0], preallocate_width_hint=size_hint[1],
                   device_memory_padding=16 << 20, host_memory_padding=8 << 20)
    return dec


def _cache_args(gpu: bool, cache_mb: int) -> dict:
    """The decoder cache's arguments (``decoders.image`` on the GPU only: a cropped decode is not cacheable, and
    ``decoders.image_crop`` rejects them when the graph is defined)."""
    if not (gpu and cache_mb):
        return {}
    return dict(cache_size=cache_mb, cache_type="threshold", cache_threshold=0, cache_batch_copy=True)


def _train_images(jpg, dec: dict, cache: dict, cfg: AugmentConfig, *, random_params: RandomParams, roi_decode: bool,
                  dev: str, layout: str = "CHW", uint8: bool = False):
    """The train branch: random resized crop + flip + rotation as one warp, colour jitter, normalization
    (``uint8``: the warp's HWC uint8 output; the colour is the graph's third output)."""
    from nvidia.dali import fn, types
    r = fn.external_source(source=random_params, batch=True, batch_info=True, dtype=types.FLOAT, ndim=1,
                           name="random_params")
    box = _crop_box(fn.cast(fn.peek_image_shape(jpg), dtype=types.FLOAT), r)  # header only, no decode
    if roi_decode:  # decode only the crop: ~0.15 ms/img less on CPU
        x0, y0, w, h = box
        img = fn.decoders.image_crop(jpg, **dec, crop_w=w, crop_h=h, crop_pos_x=r[2], crop_pos_y=r[3])
        shape = fn.cast(img.shape(), dtype=types.FLOAT)
        box = (0.0, 0.0, shape[1], shape[0])
    else:  # GPU: nvJPEG decodes whole images cheaply, and only full decodes can live in the decoder cache
        img = fn.decoders.image(jpg, **dec, **cache)
    interp = types.INTERP_LINEAR if cfg.interp_for(dev) == "linear" else types.INTERP_NN
    img = fn.warp_affine(img, matrix=_affine(box, r, cfg), size=list(cfg.hw),
                         inverse_map=False, interp_type=interp, fill_value=0)
    if uint8:
        return img
    if cfg.saturation or cfg.hue:
        # float output: DALI's CPU float->uint8 saturating cast costs more than the colour matrix itself
        img = fn.hsv(img, hue=r[9], saturation=r[8], dtype=types.FLOAT)
    mean, std = _normalization(cfg, r)
    return fn.crop_mirror_normalize(img, mean=mean, std=std, dtype=_out_dtype(cfg), output_layout=layout)


def _eval_images(jpg, dec: dict, cache: dict, cfg: AugmentConfig, layout: str = "CHW", uint8: bool = False):
    """The eval branch: resize the shorter side, centre crop, normalize (as torchvision's Resize + CenterCrop;
    ``uint8``: the crop of the resized uint8 image, HWC)."""
    from nvidia.dali import fn, types
    img = fn.decoders.image(jpg, **dec, **cache)
    h, w = _eval_size(jpg, cfg)
    img = fn.resize(img, size=fn.stack(h, w), interp_type=types.INTERP_LINEAR, antialias=True)
    ch, cw = cfg.hw
    if uint8:
        return fn.crop(img, crop=[ch, cw], crop_pos_x=_centre_pos(w, cw), crop_pos_y=_centre_pos(h, ch))
    mean, std = _normalization(cfg)
    return fn.crop_mirror_normalize(img, crop=[ch, cw], crop_pos_x=_centre_pos(w, cw),
                                    crop_pos_y=_centre_pos(h, ch), mean=mean, std=std,
                                    dtype=_out_dtype(cfg), output_layout=layout)


def _out_dtype(cfg: AugmentConfig):
    from nvidia.dali import types
    return types.FLOAT16 if cfg.fp16 else types.FLOAT


def _read(paths: Sequence[str], index_paths: Sequence[str], labels: PlannedLabels | None):
    """The reader: ``(jpg, labels)`` data nodes (labels from the ``.lbl`` members, or from ``labels``)."""
    from nvidia.dali import fn, types
    if labels is None:
        return fn.readers.webdataset(paths=list(paths), index_paths=list(index_paths), ext=["jpg", "lbl"],
                                     dtypes=[types.UINT8, types.INT64], random_shuffle=False,
                                     missing_component_behavior="error", name="reader")
    jpg = fn.readers.webdataset(paths=list(paths), index_paths=list(index_paths), ext=["jpg"],
                                dtypes=[types.UINT8], random_shuffle=False,
                                missing_component_behavior="error", name="reader")
    return jpg, fn.external_source(source=labels, batch=True, batch_info=True, dtype=types.INT64, ndim=1,
                                   name="labels")


def fashion_pipeline(*, paths: Sequence[str], index_paths: Sequence[str], cfg: AugmentConfig, batch_size: int,
                     device_id: int | None, num_threads: int, seed: int, prefetch: int = 2, cache_mb: int = 0,
                     size_hint: tuple[int, int] = (0, 0), roi_decode: bool | None = None,
                     random_params: RandomParams | None = None, labels: PlannedLabels | None = None,
                     transform: Callable | None = None, channels_last: bool = False,
                     hw_decoder_load: float = DEFAULT_HW_DECODER_LOAD, colour: ColourParams | None = None):
    """Build (not run) the DALI pipeline. ``device_id=None``: every operator on the CPU; else decode ``mixed``
    and the rest on GPU ``device_id``. Outputs: images float[16] ``[B,3,S,S]`` normalized, labels int64
    ``[B,label width]``. ``cache_mb`` > 0 (GPU only) keeps decoded images in the decoder's cache; ``size_hint`` is
    (height, width) of the largest expected image, to preallocate decoder buffers. ``roi_decode`` (default: on CPU
    only) picks the train crop strategy: decode only the crop, or decode everything (GPU: cacheable) and warp the
    crop box. ``random_params`` (required for train) supplies the per-sample random numbers; ``labels``, for a set
    whose labels are not ``.lbl`` members, the labels of each batch (the reader then reads only ``.jpg``).
    ``transform`` (the loader's ``augment=`` callable) replaces the augmentation: ``transform(images, labels)``
    gets the decoded RGB images (HWC uint8; on the GPU when ``device_id`` is set, else on the CPU) and the labels
    (int64 per attribute, CPU) as DALI data nodes and returns the images to deliver. ``channels_last``: the
    built-in graphs emit HWC samples (the backend views them as NCHW tensors with channels_last strides, which is
    the memory format the CUDA training step wants: no copy to convert). ``hw_decoder_load``: the share of JPEGs
    ``mixed`` decoding gives the hardware JPEG decoder where the GPU has one (A100, H100, H200; ignored elsewhere).
    The decoder cache applies to full decodes only: with ``roi_decode`` it is left out (a cropped decode cannot be
    cached). ``colour`` (the built-in graphs only) asks for uint8 output: images ``[B,S,S,3]`` uint8 (HWC, before
    any colour operator) and a third output, each sample's ``[3, 4]`` colour matrix (on the CPU), which
    :func:`~fastfashion.loading.colour.apply_colour` applies where the model runs."""
    from nvidia.dali import fn, pipeline_def, types
    gpu = device_id is not None
    uint8 = colour is not None
    if uint8 and transform is not None:
        raise ValueError("uint8 output (colour) is for the built-in augmentation, not an augment callable")
    if cfg.is_train and random_params is None:
        raise ValueError("the train graph needs random_params")

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                  prefetch_queue_depth=prefetch, exec_dynamic=True)  # dynamic executor: zero-copy to torch
    def graph():
        jpg, lbl = _read(paths, index_paths, labels)
        dec, cache = _decoder_args(gpu, size_hint, hw_decoder_load), _cache_args(gpu, cache_mb)
        layout = "HWC" if channels_last else "CHW"
        if transform is not None:
            img = transform(fn.decoders.image(jpg, **dec, **cache), lbl)
        elif cfg.is_train:
            img = _train_images(jpg, dec, cache, cfg, random_params=random_params,
                                roi_decode=(not gpu) if roi_decode is None else roi_decode,
                                dev="gpu" if gpu else "cpu", layout=layout, uint8=uint8)
        else:
            img = _eval_images(jpg, dec, cache, cfg, layout, uint8=uint8)
        lbl = lbl.gpu() if gpu else lbl
        if uint8:
            return img, lbl, fn.external_source(source=colour, batch=True, batch_info=True, dtype=types.FLOAT, ndim=2,
                                                name="colour")
        return img, lbl

    return graph()
