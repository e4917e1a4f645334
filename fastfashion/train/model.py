"""FashionNet: a torchvision ResNet-18 trunk with one classification head per schema attribute.

The heads follow the seed report: ``Linear -> BatchNorm1d -> ReLU -> Dropout -> Linear``, sized from the
:class:`~fastfashion.schema.Schema` (one head per attribute, ``attribute.num_classes`` outputs each).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, FastfashionError, fixable
from ..schema import Schema

log = logging.getLogger(__name__)

TRUNK_FEATURES = 512  # ResNet-18's pooled feature width


class WeightsError(FastfashionError, RuntimeError):
    """Initial weights could not be obtained (offline, missing or incompatible file)."""


def _head(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


class FashionNet(nn.Module):
    """ResNet-18 trunk + one head per attribute; ``forward(x)`` returns a list of logits ``[B, K_i]``.

    ``weights``: ``None`` (random init, seeded by the caller's torch RNG), ``"imagenet"`` (torchvision's
    ``ResNet18_Weights.IMAGENET1K_V1`` for the trunk; needs the network or a filled torch hub cache) or a path to a
    local state dict: either a whole FashionNet (keys ``trunk.*``/``heads.*``, or a fastfashion checkpoint with a
    ``"model"`` entry) or a plain torchvision ResNet-18 (its ``fc.*`` is dropped; heads stay random).
    Raises :class:`WeightsError` when the weights cannot be loaded.
    """

    def __init__(self, schema: Schema, weights: str | os.PathLike | None = None, *, dropout: float = 0.5,
                 hidden: int = 256) -> None:
        super().__init__()
        import torchvision

        self.schema = schema
        self.trunk = torchvision.models.resnet18(weights=None)
        self.trunk.fc = nn.Identity()  # the heads replace the 1000-way classifier
        self.heads = nn.ModuleList(_head(TRUNK_FEATURES, hidden, a.num_classes, dropout) for a in schema)
        if weights is None:
            return
        if str(weights) == "imagenet":
            self.trunk.load_state_dict(_imagenet_state_dict(), strict=True)
        else:
            self._load_path(Path(weights))

    def forward(self, x: torch.Tensor, colour: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Logits per attribute of normalized float images ``x``; or of uint8 images ``x`` (a loader's
        ``output="uint8"`` batch) with their ``colour`` matrices, finished here on ``x``'s device in the memory
        format of the trunk's first convolution (:func:`~fastfashion.loading.colour.apply_colour`)."""
        if x.dtype == torch.uint8:
            if colour is None:
                raise ConfigError("uint8 images need their colour matrices: model(batch.images, batch.colour)")
            from ..loading.colour import apply_colour
            cl = self.trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last) and \
                not self.trunk.conv1.weight.is_contiguous()
            x = apply_colour(x, colour, channels_last=cl)
        features = self.trunk(x)
        return [head(features) for head in self.heads]

    def _load_path(self, path: Path) -> None:
        from .checkpoint import torch_load
        state = torch_load(path, WeightsError, what="weights file")
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]  # a fastfashion checkpoint
        if not isinstance(state, dict):
            raise WeightsError(f"{path} does not hold a state dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from a DDP wrapper
        try:
            if any(k.startswith("trunk.") for k in state):
                self.load_state_dict(state, strict=True)
                log.info("loaded FashionNet weights from %s", path)
            else:
                self.trunk.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=True)
                log.info("loaded ResNet-18 trunk weights from %s (heads randomly initialised)", path)
        except RuntimeError as e:
            raise WeightsError(f"{path} does not match this model: {str(e).splitlines()[0]}") from e


def _imagenet_state_dict() -> dict:
    """torchvision's ImageNet ResNet-18 weights without ``fc``; a clear :class:`WeightsError` when offline."""
    import torchvision

    w = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    try:
        state = w.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # URLError, OSError, hash mismatch, ...
        hub = torch.hub.get_dir()
        raise fixable(WeightsError(
            f"could not download torchvision's ImageNet ResNet-18 weights ({type(e).__name__}: {e}); "
            f"this machine looks offline. Put {w.url.rsplit('/', 1)[-1]} in {hub}/checkpoints, or load a local "
            f"ResNet-18 or FashionNet state dict instead (weights=PATH)"), "weights") from e
    return {k: v for k, v in state.items() if not k.startswith("fc.")}
