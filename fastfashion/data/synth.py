"""Write a learnable synthetic FashionDataset in exactly the real layout and byte formats (``docs/data.md``).

Each image shows one garment on a person. Every attribute of the schema is visibly rendered: pattern as texture,
sleeve/length/fit as garment shape, neckline as the cut at the neck, fabric as colour and texture family. Nuisance
variation (position, scale, background, noise, JPEG quality) makes a model learn shapes rather than read one pixel.
Labels are drawn independently per attribute from the real train class frequencies, so the imbalance is realistic.

Everything is driven by the :class:`~fastfashion.schema.Schema`: rendering looks classes up by attribute and class
name; an attribute the renderer does not know is drawn as a coloured badge whose hue encodes the class, so any
schema yields a learnable set. Image ``i`` depends only on ``(seed, i)``, never on the worker count.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import ConfigError, TargetExistsError, fixable
from ..format.atomic import clean_stale, make_temp_dir, replace_dir, with_path
from ..format.spec import LABELLED_SPLITS, SPLITS, TEST, TRAIN, VAL
from ..hardware import available_cpus, bound_to_cpus
from ..options import option
from ..progress import progress
from ..schema import FASHION_SCHEMA, Schema
from .synth_render import render_garment

log = logging.getLogger(__name__)

MAX_IMAGES = 100_000  # keys are 5-digit stems, like the real set

# Train class counts of the real FashionDataset (docs/data.md, "Train class counts").
REAL_TRAIN_COUNTS: dict[str, dict[str, int]] = {
    "pattern": {"floral": 768, "graphic": 853, "striped": 334, "embroidered": 422, "pleated": 109, "solid": 2408,
                "lattice": 106},
    "sleeve": {"long_sleeve": 1523, "short_sleeve": 862, "sleeveless": 2615},
    "length": {"maxi_length": 488, "mini_length": 951, "no_dress": 3561},
    "neckline": {"crew_neckline": 2086, "v_neckline": 826, "square_neckline": 19, "no_neckline": 2069},
    "fabric": {"denim": 310, "chiffon": 702, "cotton": 3399, "leather": 105, "faux": 48, "knit": 436},
    "fit": {"tight": 749, "loose": 279, "conventional": 3972},
}

# Image sizes (width, height) of the real set, most common first, with their share of images; the rest are drawn
# from the tails below. The real long side is 300 (sometimes 301); we always use 300.
COMMON_SIZES: tuple[tuple[int, int, float], ...] = (
    (200, 300, 0.142), (300, 300, 0.116), (205, 300, 0.159), (236, 300, 0.087), (225, 300, 0.054),
    (201, 300, 0.039), (240, 300, 0.029), (208, 300, 0.024), (196, 300, 0.024), (258, 300, 0.017),
)
PORTRAIT_WIDTHS = (170, 300)   # the remaining portrait images: width uniform in this range
LANDSCAPE_SHARE = 0.02         # ~2 % of real images are wider than tall (300 x 150..299)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """How many images per split, the seed, and generation options. Raises ValueError when invalid."""

    train: int = option(5000, help="train images (default: %(default)s, like the real set)")  # real: 5,000/1,000/1,000
    val: int = option(1000, help="val images (default: %(default)s)")
    test: int = option(1000, help="test images, unlabelled (default: %(default)s)")
    seed: int = option(0, help="random seed (default: %(default)s)")  # image i is a pure function of (seed, i)
    workers: int | None = option(None, help=(  # None: the CPUs available
        "processes (default: all CPU cores); the output does not depend on it"))
    quality: tuple[int, int] = (70, 95)   # JPEG quality drawn per image in this closed range
    schema: Schema = FASHION_SCHEMA
    balanced: bool = False            # classes drawn uniformly instead of at the real set's frequencies (the demo)

    def __post_init__(self) -> None:
        for name in SPLITS:  # the fields are named after the splits
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {v!r}")
        if self.total == 0:
            raise ConfigError("train + val + test must be at least 1")
        if self.total > MAX_IMAGES:
            raise ConfigError(f"at most {MAX_IMAGES} images (5-digit names), got {self.total}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        lo, hi = self.quality
        if not 1 <= lo <= hi <= 100:
            raise ConfigError(f"quality range must satisfy 1 <= lo <= hi <= 100, got {self.quality}")

    @property
    def total(self) -> int:
        return self.train + self.val + self.test

    def split_ranges(self) -> dict[str, range]:
        """Image indices per split: train first, then val, then test (continuous numbering, like the real set)."""
        return {TRAIN: range(0, self.train), VAL: range(self.train, self.train + self.val),
                TEST: range(self.train + self.val, self.total)}


def class_probs(schema: Schema = FASHION_SCHEMA, balanced: bool = False) -> list[np.ndarray]:
    """Per attribute, the probability of each class: the real train frequencies where known, else uniform (all
    uniform with ``balanced``).

    A class missing from :data:`REAL_TRAIN_COUNTS` gets the mean count of the known classes of its attribute.
    """
    out = []
    for attr in schema:
        known = {} if balanced else REAL_TRAIN_COUNTS.get(attr.name, {})
        counts = [known.get(c) for c in attr.classes]
        have = [c for c in counts if c is not None]
        fill = float(np.mean(have)) if have else 1.0
        p = np.array([fill if c is None else float(c) for c in counts])
        out.append(p / p.sum())
    return out


def _draw_labels(rng: np.random.Generator, probs: list[np.ndarray]) -> tuple[int, ...]:
    """One class per attribute; the first draws from an image's RNG, so labels can be sampled without rendering."""
    return tuple(min(int(np.searchsorted(np.cumsum(p), rng.random(), side="right")), len(p) - 1) for p in probs)


def _image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def sample_labels(cfg: SynthConfig, indices: range | None = None) -> np.ndarray:
    """Labels ``[N, len(schema)]`` (int64) of images ``indices`` (default: all) without rendering them.

    Identical to the labels :func:`synthesize` writes for the same config.
    """
    indices = range(cfg.total) if indices is None else indices
    probs = class_probs(cfg.schema, cfg.balanced)
    rows = [_draw_labels(_image_rng(cfg.seed, i), probs) for i in indices]
    return np.array(rows, dtype=np.int64).reshape(len(rows), len(cfg.schema))


def _draw_size(rng: np.random.Generator) -> tuple[int, int]:
    """An image size (width, height) following the real distribution; the long side is always 300."""
    u = rng.random()
    for w, h, share in COMMON_SIZES:
        if u < share:
            return w, h
        u -= share
    if u < LANDSCAPE_SHARE:
        return 300, int(rng.integers(150, 300))
    return int(rng.integers(PORTRAIT_WIDTHS[0], PORTRAIT_WIDTHS[1] + 1)), 300


def render_sample(cfg: SynthConfig, index: int) -> tuple[bytes, tuple[int, ...]]:
    """The JPEG bytes and labels of image ``index``: a pure function of ``(cfg.seed, index)`` and the schema."""
    import io
    rng = _image_rng(cfg.seed, index)
    labels = _draw_labels(rng, class_probs(cfg.schema, cfg.balanced))  # first, so sample_labels() agrees
    size = _draw_size(rng)
    img = render_garment(cfg.schema, labels, rng, size)
    quality = int(rng.integers(cfg.quality[0], cfg.quality[1] + 1))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=False, progressive=False)  # baseline, 4:2:0 like the real set
    return buf.getvalue(), labels


def _write_one(job: tuple[SynthConfig, str, int]) -> int:
    """Worker: render image ``index`` into ``img_dir``; returns its size in bytes."""
    cfg, img_dir, index = job
    data, _ = render_sample(cfg, index)
    path = os.path.join(img_dir, f"{index:05d}.jpg")
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise with_path(e, path) from e
    return len(data)


def _write_lines(path: Path, lines: list[str]) -> None:
    """LF endings and a newline after the last line, like the real split files."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(line + "\n" for line in lines))


def _prepare_target(out: Path, overwrite: bool) -> None:
    clean_stale(out)  # the temporaries of a killed run (an interrupted overwrite is put back)
    if out.exists() and not out.is_dir():
        raise TargetExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise fixable(TargetExistsError(f"{out} exists and is not empty; refusing to replace it without "
                                          "overwrite=True"), "overwrite")
        if not (out / "split").is_dir() or not (out / "img").is_dir():  # never wipe an unrelated folder
            raise TargetExistsError(f"{out} is not a data set folder (no img/ and split/); refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)


def _ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the parent, which terminates them and cleans up (no worker tracebacks)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _write_images(cfg: SynthConfig, img_dir: Path) -> list[int]:
    """Render every image into ``img_dir`` with ``cfg.workers`` processes; returns the byte size of each."""
    workers = min(bound_to_cpus("workers", cfg.workers, "synth") if cfg.workers else available_cpus(), cfg.total)
    jobs = [(cfg, str(img_dir), i) for i in range(cfg.total)]
    bar = dict(total=cfg.total, desc="synth", unit="img")
    if workers == 1:
        return [_write_one(j) for j in progress(jobs, **bar)]
    chunk = max(1, min(64, cfg.total // (workers * 8)))
    # spawn: safe even when the parent holds threads (torch, DALI); start-up cost is small next to rendering
    with mp.get_context("spawn").Pool(workers, initializer=_ignore_sigint) as pool:
        return list(progress(pool.imap(_write_one, jobs, chunksize=chunk), **bar))


def synthesize(out_dir: str | os.PathLike, cfg: SynthConfig = SynthConfig(), *, overwrite: bool = False) -> Path:
    """Write a synthetic FashionDataset to ``out_dir`` and return its path.

    The set is built in a temporary folder beside ``out_dir`` and renamed into place at the end, so ``out_dir``
    never holds a half-written set. Raises FileExistsError if ``out_dir`` exists and is not empty (unless
    ``overwrite``), ValueError for a bad config, OSError for file system problems.
    """
    out = Path(out_dir).absolute()
    schema = cfg.schema
    _prepare_target(out, overwrite)
    tmp = make_temp_dir(out)
    try:
        (tmp / "img").mkdir()
        (tmp / "split").mkdir()
        sizes = _write_images(cfg, tmp / "img")
        labels = sample_labels(cfg)
        for split, idx in cfg.split_ranges().items():
            _write_lines(tmp / "split" / f"{split}.txt", [f"img/{i:05d}.jpg" for i in idx])
            if split in LABELLED_SPLITS:  # the test split has no labels
                _write_lines(tmp / "split" / f"{split}_attr.txt",
                             [" ".join(str(v) for v in labels[i]) for i in idx])
        with open(tmp / "split" / "list_attr_cloth.txt", "w", encoding="utf-8", newline="\n") as f:
            f.write(schema.to_list_attr_cloth())
        if schema != FASHION_SCHEMA:  # list_attr_cloth.txt has no attribute names: schema.json keeps them
            (tmp / "split" / "schema.json").write_text(schema.to_json(), encoding="utf-8")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kb = np.array(sizes) / 1024
    log.info("wrote %d images (%d/%d/%d) to %s; JPEG %.1f-%.1f KB, median %.1f KB", cfg.total, cfg.train, cfg.val,
             cfg.test, out, kb.min(), kb.max(), float(np.median(kb)))
    return out
