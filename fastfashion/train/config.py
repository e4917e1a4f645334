"""What a training run is asked to do: :class:`TrainConfig`, the one keyword-only config of
:func:`fastfashion.train.trainer.train` (named starting points: :mod:`fastfashion.train.recipes`)."""
from __future__ import annotations

import dataclasses
import re

from ..errors import ConfigError, FastfashionError
from ..hardware import DEVICES, PRECISIONS
from ..loading.augment import AugmentConfig, check_image_size, parse_image_size
from ..loading.base import BACKEND_CHOICES, OUTPUT_CHOICES
from ..options import option, parse_fraction_pair
from ..remote.store import RemoteConfig
from .schedule import SCHEDULES, image_size_at

REFERENCE_LR = 1e-4            # the seed report's Adam learning rate (tuned for an ImageNet-initialised trunk)
REFERENCE_WEIGHT_DECAY = 1e-3  # the seed report's Adam weight decay
OPTIMIZERS = ("adam", "adamw")
CLASS_BALANCES = ("weights", "sqrt", "logit-adjust")  # how the loss makes up for rare classes (loss.loss_weights)
TTA_CHOICES = ("none", "flip")  # test-time augmentation of evaluate/predict (trainer.infer)
RAMP = (0.1, 0.7)  # progressive resizing grows the size between these fractions of the epochs

RECIPES: dict[str, dict] = {
    "seed": {},  # TrainConfig's defaults are the seed report's recipe
    "fast": {"precision": "amp", "batch_size": 32, "lr": 5e-4, "schedule": "linear", "warmup_epochs": 0.3,
             "class_balance": "logit-adjust", "label_smoothing": 0.1, "crop_scale": (0.35, 1.0), "rotation": 0.0,
             "color_jitter": 0.1, "dropout": 0.2, "ema_halflife": 0.5, "epochs": 16},
    "demo": {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05, "schedule": "linear", "warmup_epochs": 1.0,
             "label_smoothing": 0.1, "dropout": 0.2, "crop_scale": (0.25, 1.0), "rotation": 0.0,
             "color_jitter": 0.0, "ema_halflife": 0.5, "epochs": 10},
}
"""Each recipe (:mod:`.recipes`): the TrainConfig fields it sets; the rest keep TrainConfig's defaults. Here, beside
TrainConfig, because the ``recipe`` field's choices are its names."""


class TrainError(FastfashionError, ValueError):
    """The shard set or run folder cannot be trained on as asked (no labelled val split, no full batch ...)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Every option of a run; ``fastfashion train``'s flags and help come from the field metadata
    (:mod:`fastfashion.options`)."""

    shard_dir: str = option(flag="--shards", metavar="SHARD_DIR", required=False,  # --print-config needs neither
                            help="a shard folder written by 'fastfashion shard' (required unless --print-config)")
    out: str = option(metavar="RUN_DIR", required=False,
                      help="run folder for checkpoints and metrics (required unless --print-config)")
    epochs: int = option(45, help="epochs")  # the seed report trained 45 epochs
    batch_size: int = option(64, help="batch size per process")
    recipe: str = option("seed", choices=tuple(RECIPES),  # the named recipe these values started from
                         help="named set of the options below (default: %(default)s)")
    optimizer: str = option("adam", choices=OPTIMIZERS,
                            help="adam (L2 weight decay, the seed report's) or adamw (decoupled weight decay)")
    lr: float = option(REFERENCE_LR, help="peak learning rate")
    weight_decay: float = option(REFERENCE_WEIGHT_DECAY, help="weight decay")
    dropout: float = option(0.5, help="dropout in every head")
    label_smoothing: float = option(0.0, help="cross-entropy label smoothing")
    class_balance: str = option("weights", choices=CLASS_BALANCES, help=(
        "how the loss makes up for rare classes: weights (the seed's cross-entropy weighted N/(K n_c)), sqrt (the "
        "roots of those weights), logit-adjust (log class priors added to the logits in the loss only)"))
    schedule: str = option("plateau", choices=SCHEDULES, help=(  # see train/schedule.py
        "learning-rate schedule: plateau (ReduceLROnPlateau on val average class accuracy), linear or cosine decay "
        "to 0"))
    warmup_epochs: float = option(0.0, help="linear/cosine: epochs of linear warm-up")
    lr_factor: float = 0.1             # plateau: ReduceLROnPlateau on val average class accuracy
    lr_patience: int = 5
    image_size: int | tuple[int, int] = option(224, type=parse_image_size, metavar="N|HxW", help=(
        "input size in pixels, 8..1024, square or HEIGHTxWIDTH: the final train size and the eval size"))
    resize_start: float | None = option(None, help=(  # None: off
        f"progressive resizing: train at X * image size first, growing to the image size over epochs "
        f"{RAMP[0] * 100:.0f}-{RAMP[1] * 100:.0f}%% (measured, it costs early val accuracy)"))
    ramp: tuple[float, float] = RAMP   # ... growing to image_size between these fractions of the epochs
    augment: bool = option(True, flag="--no-augment", dest="no_augment",  # AugmentConfig.train with the knobs below
                           help="no train-time augmentation")
    crop_scale: tuple[float, float] = option((0.08, 1.0), type=parse_fraction_pair, metavar="LO,HI", help=(
        "random resized crop: the share of the image area kept, drawn from [LO, HI]"))
    rotation: float = option(15.0, metavar="DEG", help="max rotation in degrees")  # the seed's RandomRotation(15)
    color_jitter: float = option(0.2, help=(  # factors in U(1-x, 1+x)
        "brightness/contrast/saturation jitter; hue: X/4"))
    ema_halflife: float | None = option(None, metavar="EPOCHS", help=(  # ema.py; None: off
        "validate and save an exponential moving average of the weights with this half-life in epochs"))
    device: str = option("auto", choices=DEVICES,  # the library also takes cuda:N (under torchrun: the local rank's)
                         help="auto: CUDA if available, else the CPU (default: %(default)s)")
    precision: str = option("auto", choices=PRECISIONS, help=(  # device.py
        "auto: mixed precision on CUDA, fp32 on the CPU; amp: also bf16 on a CPU with native bf16 "
        "(AMX/AVX512-BF16; about 2x faster steps there), fp32 on other CPUs; fp32: never"))
    backend: str = option("auto", choices=BACKEND_CHOICES, help=(  # see LoaderConfig
        "loader backend; auto: dali-gpu with CUDA, else dali-cpu, else torch; dali: DALI on --device (default: "
        "%(default)s)"))
    loader_output: str = option("auto", choices=OUTPUT_CHOICES, help=(  # LoaderConfig.output; measured: README
        "what the loader delivers: uint8 images and a colour matrix per sample, finished (jitter + normalization in "
        "one matrix product) on --device at the model's input, or float: images finished by the loader; auto: "
        "uint8, except dali-cpu feeding the CPU, where float measured faster (default: %(default)s)"))
    weights: str | None = option(None, metavar="PATH|imagenet", help=(  # None: random init
        "initial weights: 'imagenet' (torchvision, needs the network) or a local state dict; default: random init"))
    resume: bool = option(False, help=(
        "continue from RUN_DIR/last.pt at the exact step it was written (same or another number of processes)"))
    max_steps: int | None = option(None, help="stop after N optimizer steps in total")
    seed: int = option(0, help="seed of init, data order and augmentation (default: %(default)s)")
    workers: int | None = option(None, help=(  # None: the loader's default
        "DataLoader worker processes of the torch backend (default: the loader's choice)"))
    verify: bool = option(True, flag="--no-verify", help=(
        "skip checking the shard files against the manifest's sha256 before reading (faster first start on a huge "
        "set; corrupted shards may then deliver wrong data)"))
    remote: RemoteConfig = RemoteConfig()  # shard_dir as a URL: storage options, cache folder and limit, offline
    checkpoint_minutes: float | None = option(10.0, metavar="M", help=(  # 0 or None: only at epoch ends
        "also write last.pt during an epoch every M minutes (0: only at epoch ends; default: %(default)s). "
        "SIGTERM/Ctrl-C: finish the step, write last.pt, exit 143/130"))
    checkpoint_every: int | None = option(None, help="also write last.pt every N optimizer steps")
    overwrite: bool = option(False, help=(  # resume continues a run instead
        "start over in a RUN_DIR that already holds a run"))

    def __post_init__(self) -> None:
        check_image_size(self.image_size)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.device not in DEVICES and not re.fullmatch(r"cuda:\d+", str(self.device)):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.resume and self.overwrite:
            raise ConfigError("resume and overwrite exclude each other")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.class_balance not in CLASS_BALANCES:
            raise ConfigError(f"class_balance must be one of {', '.join(CLASS_BALANCES)}, got {self.class_balance!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup_epochs < 0 or self.lr <= 0:
            raise ConfigError(f"lr must be > 0 and warmup_epochs >= 0, got {self.lr} and {self.warmup_epochs}")
        if self.ema_halflife is not None and not self.ema_halflife > 0:
            raise ConfigError(f"ema_halflife must be > 0 epochs, got {self.ema_halflife}")
        if self.resize_start is not None and not 0 < self.resize_start <= 1:
            raise ConfigError(f"resize_start must be a fraction of image_size in (0, 1], got {self.resize_start}")
        if not 0 <= self.ramp[0] <= self.ramp[1] <= 1:
            raise ConfigError(f"ramp must be two fractions of the epochs, 0 <= start <= end <= 1, got {self.ramp}")
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
