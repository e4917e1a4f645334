"""What the loader and every backend share: :class:`LoaderConfig`, :class:`Batch`, :class:`LoaderError` and the
:class:`Backend` protocol with the :class:`BackendContext` a backend is built from."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..errors import ConfigError, FastfashionError
from ..format.jpeg import MAX_IMAGE_PIXELS
from ..format.spec import TRAIN
from ..remote.store import RemoteConfig
from .augment import AugmentConfig, check_image_size
from .order import DEFAULT_BLOCK, DEFAULT_WINDOW

if TYPE_CHECKING:
    import numpy as np

    from ..format.reader import SplitSamples
    from ..schema import Schema

@dataclasses.dataclass(frozen=True)
class BackendSpec:
    """One entry of the backend registry: where the class lives (imported only when built) and what it does."""

    module: str
    cls: str
    description: str
    needs_cuda: bool = False


BACKENDS = {  # the one list of backend names, used by the API, the CLI, bench JSON and the docs
    "dali-gpu": BackendSpec("fastfashion.loading.backends.dali", "DaliBackend",
                            "DALI pipeline, mixed JPEG decode + GPU augmentation", needs_cuda=True),
    "dali-cpu": BackendSpec("fastfashion.loading.backends.dali", "DaliBackend",
                            "DALI pipeline on CPU operators (device_id=None)"),
    "torch": BackendSpec("fastfashion.loading.backends.torch", "TorchBackend",
                         "shards read by byte offset, PIL decode + torchvision transforms, DataLoader workers"),
}
BACKEND_CHOICES = ("auto", "dali", *BACKENDS)
"""What ``backend`` accepts: a name of :data:`BACKENDS`, ``dali`` (DALI on the loader's device: dali-gpu on CUDA,
dali-cpu on the CPU) or ``auto`` (dali-gpu, else dali-cpu, else torch)."""


class LoaderError(FastfashionError, RuntimeError):
    """A shard or sample cannot be loaded; the message names the shard (tar or idx) and the sample key."""


class Batch(NamedTuple):
    """``images`` float [B,3,H,W] normalized (on the loader's device), ``labels`` int64 [B,len(schema)]
    (-1 for unlabelled splits), ``keys`` list[str] when the loader was made with ``with_keys=True``, else None.

    With ``output="uint8"``: ``images`` uint8 [B,3,H,W] (an HWC buffer viewed as NCHW, i.e. channels_last strides,
    from the DALI backends) and ``colour`` float32 [B,3,4], each sample's colour matrix (jitter and normalization,
    :mod:`fastfashion.loading.colour`); :meth:`finished` applies it. With ``output="float"`` ``colour`` is None."""

    images: Any
    labels: Any
    keys: list[str] | None = None
    colour: Any = None

    def finished(self, dtype=None, channels_last: bool | None = None):
        """The normalized float images: ``images`` itself for float output, else ``colour`` applied to the uint8
        images on their device (:func:`~fastfashion.loading.colour.apply_colour`; ``dtype`` default float32,
        ``channels_last`` default the images' memory format)."""
        if self.colour is None:
            return self.images if dtype is None else self.images.to(dtype)
        from .colour import apply_colour
        return apply_colour(self.images, self.colour, dtype=dtype, channels_last=channels_last)


OUTPUTS = ("float", "uint8")
OUTPUT_CHOICES = ("auto", *OUTPUTS)
"""What ``output`` accepts: ``float`` (finished, normalized images), ``uint8`` (images as decoded and warped, plus
each sample's colour matrix, applied where the model runs: :meth:`Batch.finished`) or ``auto`` (:func:`auto_output`,
what the trainer, evaluate and predict use)."""


def auto_output(backend: str, device_type: str, custom_transform: bool = False) -> str:
    """``output="auto"``: uint8 (finished at the model's input), except where measured slower: dali-cpu delivering
    to the CPU, where the finish would run in the training process while DALI's float stages run in its own threads
    (2 cores, 224 px: 964 img/s float against 756 uint8 end to end, README "Loaders"), and with an augment callable
    (it finishes its own images)."""
    if custom_transform or (backend == "dali-cpu" and device_type == "cpu"):
        return "float"
    return "uint8"

AUGMENT_ACCEPTS = ("None, a bool, an AugmentConfig, or a callable: for the torch backend an RGB PIL image -> "
                   "CHW tensor (e.g. a torchvision v2 transform), for the DALI backends (images, labels) -> images "
                   "of DALI data nodes (decoded HWC uint8 images, on the GPU for dali-gpu)")
"""What ``augment=`` takes (the message of the TypeError for anything else)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoaderConfig:
    """Every option of a loader (what :func:`~fastfashion.loading.loader.make_loader` takes as keywords).

    ``augment``: None = train augmentation for the train split, eval transform otherwise; a bool forces it; an
    :class:`AugmentConfig` sets every knob (``image_size`` overrides its own); a callable replaces the built-in
    augmentation (:data:`AUGMENT_ACCEPTS`). ``image_size``: an int (square) or ``(height, width)``.
    ``shuffle``/``drop_last``: None = on
    for train, off otherwise. ``rank``/``world_size``: None = from ``torch.distributed`` when initialized, else 0/1.
    ``workers``: DataLoader workers of the torch backend (None: min(4, CPUs)). ``block``: shuffle block size
    (:mod:`fastfashion.loading.order`). ``gpu_cache`` (dali-gpu only): the decoder cache policy (None: automatic,
    see :mod:`fastfashion.loading.backends.dali`). ``dali_threads``: CPU threads of each DALI pipeline (None: the
    backend's default, :func:`fastfashion.loading.backends.dali.dali_threads`). ``hw_decoder_load`` (dali-gpu only):
    the share of JPEGs for the GPU's hardware JPEG decoder (None: the GPU family's default,
    :mod:`fastfashion.loading.backends.jpeg_engine`). ``verify``: check every tar and
    ``.idx`` of the split against the manifest's size and sha256 before the first read
    (:mod:`fastfashion.format.verify`; remembered per file, so a warm start does not hash again); False skips it, at
    the risk of delivering corrupted bytes. ``order``: ``blocked`` (the full blocked shuffle), ``windowed``
    (shards permuted per epoch, samples shuffled within ``window`` shards, each rank reading its own shards:
    :func:`fastfashion.loading.order.window_plan`), None = blocked, or windowed for a remote split larger than
    ``remote.cache_limit``. ``remote``: how a URL shard folder is reached and cached
    (:class:`~fastfashion.remote.store.RemoteConfig`; ignored for a local folder). ``max_image_pixels``: every
    sample's JPEG headers are read when the split is opened (:mod:`fastfashion.format.jpeg`): a header claiming more
    pixels than this (default PIL's 89,478,485), a broken marker structure or a truncated scan is refused with one
    line naming shard and key before any decoder sees it. ``output``: ``float`` delivers finished float images;
    ``uint8`` delivers uint8 images and a per-sample colour matrix in ``Batch.colour`` (a quarter of the bytes to
    move to the device, and no float work in the loader; :meth:`Batch.finished` or ``FashionNet`` apply it), for
    the built-in augmentation only; ``auto`` picks one per backend and device (:func:`auto_output`). Raises
    ValueError for a bad value.
    """

    split: str = TRAIN
    batch_size: int = 64
    backend: str = "auto"              # one of BACKEND_CHOICES
    device: Any = "auto"               # auto | cpu | cuda | cuda:N | a torch.device: where batches are delivered
    augment: AugmentConfig | bool | Callable | None = None  # see AUGMENT_ACCEPTS
    shuffle: bool | None = None
    image_size: int | tuple[int, int] = 224   # a square, or (height, width)
    seed: int = 0
    rank: int | None = None
    world_size: int | None = None
    with_keys: bool = False
    drop_last: bool | None = None
    workers: int | None = None
    block: int = DEFAULT_BLOCK
    gpu_cache: bool | None = None
    dali_threads: int | None = None    # DALI CPU threads per pipeline (None: see backends/dali.py dali_threads)
    hw_decoder_load: float | None = None  # dali-gpu: hardware JPEG decoder share (None: by GPU, jpeg_engine.py)
    verify: bool = True                # check the split's files against the manifest's sha256 before reading
    order: str | None = None           # blocked | windowed | None (see above)
    window: int = DEFAULT_WINDOW       # shards per window of the windowed order
    remote: RemoteConfig = RemoteConfig()  # storage options, cache folder and limit, offline, retries
    max_image_pixels: int = MAX_IMAGE_PIXELS  # a JPEG header claiming more is refused before decoding (bombs)
    output: str = "float"              # float | uint8 | auto (see above)

    def __post_init__(self) -> None:
        for name in ("batch_size", "block", "window", "max_image_pixels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        object.__setattr__(self, "image_size", check_image_size(self.image_size))
        if self.backend not in BACKEND_CHOICES:
            raise ConfigError(f"unknown backend {self.backend!r}; choose from {', '.join(BACKEND_CHOICES)}")
        if self.augment is not None and not isinstance(self.augment, (bool, AugmentConfig)) \
                and not callable(self.augment):
            raise TypeError(f"augment must be {AUGMENT_ACCEPTS}; got {type(self.augment).__name__}")
        if self.output not in OUTPUT_CHOICES:
            raise ConfigError(f"output must be one of {', '.join(OUTPUT_CHOICES)}, got {self.output!r}")
        if self.output == "uint8" and self.transform is not None:
            raise ConfigError("output='uint8' carries the built-in augmentation's colour matrix; an augment callable "
                              "delivers its own finished images: use output='float' with it")
        if self.gpu_cache not in (None, True, False):
            raise ConfigError(f"gpu_cache must be None, True or False, got {self.gpu_cache!r}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.order not in (None, "blocked", "windowed"):
            raise ConfigError(f"order must be 'blocked' or 'windowed', got {self.order!r}")
        if self.dali_threads is not None and self.dali_threads < 1:
            raise ConfigError(f"dali_threads must be >= 1, got {self.dali_threads}")
        if self.hw_decoder_load is not None and not 0.0 <= self.hw_decoder_load <= 1.0:
            raise ConfigError(f"hw_decoder_load must be between 0 and 1, got {self.hw_decoder_load}")

    @property
    def is_train_split(self) -> bool:
        return self.split == TRAIN

    @property
    def transform(self) -> Callable | None:
        """The ``augment`` callable, if one was given (it replaces the built-in augmentation)."""
        return None if isinstance(self.augment, (bool, AugmentConfig)) or self.augment is None else self.augment

    def resolved_augment(self) -> AugmentConfig:
        """The :class:`AugmentConfig` this config asks for (see the class docstring; with a callable: the
        built-in transform of the split, whose size and mode the backends still read)."""
        if isinstance(self.augment, AugmentConfig):
            return dataclasses.replace(self.augment, image_size=self.image_size)
        train = self.is_train_split if self.augment is None or self.transform else self.augment
        return AugmentConfig(image_size=self.image_size, mode="train" if train else "eval")


@dataclasses.dataclass(frozen=True)
class BackendContext:
    """What a backend is built from: the split's samples, the transform, the batch size, the device batches are
    delivered to, and ``order_of(epoch)`` (this rank's indices of any epoch, for backends that read ahead; a function
    of the order's parameters that holds no reference to the loader, which holds the backend: no cycle)."""

    samples: SplitSamples
    augment: AugmentConfig
    batch_size: int
    seed: int
    rank: int
    device: Any                                  # torch.device
    workers: int                                 # torch backend: DataLoader workers
    schema: Schema                             # of the shard set: labels per sample and their ranges
    order_of: Callable[[int], np.ndarray]
    gpu_cache: bool | None = None                # dali-gpu: decoder cache policy
    world_size: int = 1                          # ranks reading the split (dali-gpu: the automatic cache policy)
    dali_threads: int | None = None              # DALI: CPU threads per pipeline (None: dali_threads())
    roi_decode: bool | None = None               # DALI train crop strategy (None: decode the crop only on CPU)
    horizon: int | None = None                   # DALI: epochs per pipeline (None: the backend's default)
    hw_decoder_load: float | None = None         # dali-gpu: hardware JPEG decoder share (None: by GPU family)
    transform: Callable | None = None            # the augment= callable, replacing the built-in augmentation
    output: str = "float"                        # float | uint8: uint8 images + [B,3,4] colour matrices


class Backend(Protocol):
    """A loader backend: turns one epoch's order into batches. Chosen by name from
    :data:`fastfashion.loading.backends.BACKENDS`; the loader has no per-backend code."""

    def epoch(self, indices: np.ndarray, epoch: int) -> Iterator[tuple[Any, Any]]:
        """Yield ``(images, labels)`` for the global sample ``indices`` in order, in batches of the context's batch
        size (the last may be smaller); for ``output="uint8"`` ``(images, labels, colour)``. Raises
        :class:`LoaderError` naming shard and key."""
        ...

    def close(self) -> None:
        """Release pipelines, worker processes, open files and temporary files; idempotent (iteration may start
        again afterwards)."""
        ...
