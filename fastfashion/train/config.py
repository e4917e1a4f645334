"""What a training run is asked to do: :class:`TrainConfig`, the one keyword-only config of
:func:`fastfashion.train.trainer.train` (named starting points: :mod:`fastfashion.train.recipes`)."""
from __future__ import annotations

import dataclasses
import re

from ..hardware import DEVICES, PRECISIONS
from ..loading.augment import AugmentConfig, check_image_size
from ..remote.store import RemoteConfig
from .schedule import SCHEDULES, image_size_at

REFERENCE_LR = 1e-4            # the seed report's Adam learning rate (tuned for an ImageNet-initialised trunk)
REFERENCE_WEIGHT_DECAY = 1e-3  # the seed report's Adam weight decay
OPTIMIZERS = ("adam", "adamw")
CLASS_BALANCES = ("weights", "sqrt", "logit-adjust")  # how the loss makes up for rare classes (loss.loss_weights)
TTA_CHOICES = ("none", "flip")  # test-time augmentation of evaluate/predict (trainer.infer)



class TrainError(ValueError):
    """The shard set or run folder cannot be trained on as asked (no labelled val split, no full batch ...)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    shard_dir: str                     # shard folder (manifest.json, tars, .idx)
    out: str                           # run directory: checkpoints, metrics.json, curves.png
    epochs: int = 45                   # the seed report trained 45 epochs
    batch_size: int = 64               # per rank
    recipe: str = "seed"               # the named recipe these values started from (train/recipes.py)
    optimizer: str = "adam"            # adam (L2 weight decay, the seed's) | adamw (decoupled weight decay)
    lr: float = REFERENCE_LR           # peak learning rate (the seed recipe's)
    weight_decay: float = REFERENCE_WEIGHT_DECAY
    dropout: float = 0.5               # in every head
    label_smoothing: float = 0.0
    class_balance: str = "weights"     # weights (the seed's N/(K n_c)) | sqrt (their roots) | logit-adjust
    schedule: str = "plateau"          # plateau | linear | cosine (see train/schedule.py)
    warmup_epochs: float = 0.0         # linear/cosine: linear ramp-up of the learning rate
    lr_factor: float = 0.1             # plateau: ReduceLROnPlateau on val average class accuracy
    lr_patience: int = 5
    image_size: int | tuple[int, int] = 224  # (height, width) or square: validated/evaluated/predicted at; train's last
    resize_start: float | None = None  # progressive resizing: train at this fraction of image_size first (None: off)
    ramp: tuple[float, float] = (0.1, 0.7)  # ... growing to image_size between these fractions of the epochs
    augment: bool = True               # train-split augmentation (AugmentConfig.train with the knobs below)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # random resized crop area fraction
    rotation: float = 15.0             # max |degrees| (the seed's RandomRotation(15))
    color_jitter: float = 0.2          # brightness, contrast, saturation factors in U(1-x, 1+x); hue x / 4
    ema_halflife: float | None = None  # epochs: half-life of a weight average that is validated and saved (ema.py)
    device: str = "auto"               # auto | cpu | cuda | cuda:N (under torchrun: the local rank's GPU)
    precision: str = "auto"            # auto (AMP on CUDA) | amp (also bf16 on a CPU that has it) | fp32 (device.py)
    backend: str = "auto"              # a loader backend choice (see LoaderConfig)
    weights: str | None = None         # None (random), "imagenet" or a state-dict path
    resume: bool = False               # continue from OUT/last.pt
    max_steps: int | None = None       # stop after this many optimizer steps in total
    seed: int = 0                      # model init, data order, augmentation
    workers: int | None = None         # loader worker processes of the torch backend (None: the loader's default)
    verify: bool = True                # check the shards against the manifest's sha256 before reading
    remote: RemoteConfig = RemoteConfig()  # shard_dir as a URL: storage options, cache folder and limit, offline
    checkpoint_minutes: float | None = 10.0  # also write last.pt during an epoch after this much wall time
    checkpoint_every: int | None = None      # ... and/or every this many steps (None: only by time and per epoch)
    overwrite: bool = False            # replace a run already in ``out`` instead of refusing (resume continues it)

    def __post_init__(self) -> None:
        check_image_size(self.image_size)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.device not in DEVICES and not re.fullmatch(r"cuda:\d+", str(self.device)):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.class_balance not in CLASS_BALANCES:
            raise ValueError(f"class_balance must be one of {', '.join(CLASS_BALANCES)}, got {self.class_balance!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup_epochs < 0 or self.lr <= 0:
            raise ValueError(f"lr must be > 0 and warmup_epochs >= 0, got {self.lr} and {self.warmup_epochs}")
        if self.ema_halflife is not None and not self.ema_halflife > 0:
            raise ValueError(f"ema_halflife must be > 0 epochs, got {self.ema_halflife}")
        if self.resize_start is not None and not 0 < self.resize_start <= 1:
            raise ValueError(f"resize_start must be a fraction of image_size in (0, 1], got {self.resize_start}")
        if not 0 <= self.ramp[0] <= self.ramp[1] <= 1:
            raise ValueError(f"ramp must be two fractions of the epochs, 0 <= start <= end <= 1, got {self.ramp}")
        self.train_augment()  # validates crop_scale, rotation and color_jitter

    def train_augment(self) -> AugmentConfig | bool:
        """The train split's augmentation: the knobs above, or False with ``augment=False``."""
        j = self.color_jitter
        aug = AugmentConfig.train(image_size=self.image_size, scale=tuple(self.crop_scale), rotation=self.rotation,
                                  brightness=j, contrast=j, saturation=j, hue=j / 4)
        return aug if self.augment else False

    def image_size_at(self, epoch: int) -> int:
        """The train image size of ``epoch`` (0-based): progressive resizing, see :mod:`.schedule`."""
        return image_size_at(epoch, self.epochs, self.image_size, self.resize_start, tuple(self.ramp))
