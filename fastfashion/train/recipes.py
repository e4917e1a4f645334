"""Training recipes as data: named sets of :class:`~fastfashion.train.config.TrainConfig` values that any
option can override (``fastfashion train --recipe fast --lr 3e-3``; ``--print-config`` shows the result). The values
are :data:`RECIPES` (in :mod:`.config`, beside the fields); ``fastfashion train --help``, the README's recipe table
(:func:`recipe_table`) and the reasons below are written from it, not beside it.

- ``seed``: the seed report's recipe, for an ImageNet-initialised trunk: Adam with L2 weight decay,
  ReduceLROnPlateau, the full augmentation (crop, flip, rotation, colour jitter), constant size: TrainConfig's
  defaults.
- ``fast``: the time-to-accuracy recipe for training from scratch: bf16 autocast on a CPU that has it (AMX or
  AVX512-BF16; mixed precision on CUDA as always), a smaller batch, a higher peak learning rate with a short warm-up
  and a linear decay to 0, the logit-adjusted loss in place of the seed's class weights, label smoothing, lighter
  augmentation and dropout, an exponential moving average of the weights (the average is what is validated and
  saved). Measured from scratch on the 2-core machine at 112 px (README "Time to accuracy"): 0.483 val average class
  accuracy in 18.6 minutes, where the seed recipe reached 0.445 in 37.6 minutes, and ahead of it at every equal
  wall-clock point.
- ``demo``: for a few hundred images (``make demo``): AdamW with a warm-up and a linear decay, label smoothing,
  crop and flip only, the weight average: 0.57 val average class accuracy on the demo's set, where the first fast
  candidate (Adam 2e-4, batch 64, fp32, the seed's augmentation and class weights) reached 0.39 after 8 epochs.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..errors import FastfashionError
from ..options import format_value
from .config import RECIPES, TrainConfig

__all__ = ["RECIPES", "RECIPE_NOTES", "RECIPE_OPTIONS", "RecipeError", "format_config", "recipe_config",
           "recipe_note", "recipe_table", "recipe_values"]

RECIPE_OPTIONS = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "warmup_epochs",
                  "label_smoothing", "dropout", "class_balance", "image_size", "resize_start", "ema_halflife",
                  "augment", "crop_scale", "rotation", "color_jitter", "precision")
"""The options a recipe sets or may set: on the command line they default to the recipe's value."""

RECIPE_NOTES = {"seed": "the seed report's recipe, for an ImageNet-initialised trunk",
                "fast": "the time-to-accuracy recipe, for training from scratch",
                "demo": "for a few hundred images (make demo)"}
"""What each recipe is for, in a few words (``train --help``)."""


def recipe_values(name: str) -> dict[str, Any]:
    """Recipe -> its value of the TrainConfig field ``name`` (its own, else TrainConfig's default)."""
    default = {f.name: f.default for f in dataclasses.fields(TrainConfig)}[name]
    return {recipe: values.get(name, default) for recipe, values in RECIPES.items()}


def recipe_note(name: str) -> str:
    """``seed: 45, fast: 16, demo: 10`` (or ``every recipe: 224``): the recipes' values of option ``name``, as the
    ``train --help`` texts show them."""
    shown = {recipe: format_value(v) for recipe, v in recipe_values(name).items()}
    if len(set(shown.values())) == 1:
        return f"every recipe: {next(iter(shown.values()))}"
    return ", ".join(f"{recipe}: {v}" for recipe, v in shown.items())


def recipe_table() -> str:
    """The recipes side by side as a Markdown table, one row per option of :data:`RECIPE_OPTIONS` (the README
    holds a copy that tests/test_options.py compares with this)."""
    rows = ["| option | " + " | ".join(RECIPES) + " |", "|---|" + "---|" * len(RECIPES)]
    for name in RECIPE_OPTIONS:
        rows.append(f"| `{name}` | " + " | ".join(format_value(v) for v in recipe_values(name).values()) + " |")
    return "\n".join(rows)


class RecipeError(FastfashionError, ValueError):
    """An unknown recipe name, or an override that is not a training option."""


def recipe_config(recipe: str = "seed", **overrides) -> TrainConfig:
    """The :class:`TrainConfig` of ``recipe`` with ``overrides`` applied (a None override keeps the recipe's
    value). Raises :class:`RecipeError` for an unknown recipe or option, ValueError for a bad value."""
    if recipe not in RECIPES:
        raise RecipeError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise RecipeError(f"not a training option: {unknown[0]!r}")
    given = {k: v for k, v in overrides.items() if v is not None or k in ("shard_dir", "out")}
    values = {**RECIPES[recipe], **given, "recipe": recipe}
    return TrainConfig(**values)


def format_config(cfg: TrainConfig) -> str:
    """The config as JSON, one option per line, recipe first (what ``--print-config`` shows)."""
    d = dataclasses.asdict(cfg)
    d = {"recipe": d.pop("recipe"), **d}
    return "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in d.items()) + "\n}"
