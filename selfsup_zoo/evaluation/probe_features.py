"""The frozen features a linear probe reads, several variants from one forward pass.

Variants (names used in recipes and results):

* ``pool``: the model's own pooled output (``forward`` with ``num_classes=0``): a CNN's global
  average pool (CARE's 2048-d ``res5`` feature, ``docs/methods/care.md`` §6), a ViT's pooled token.
* ``cls<n>``: a ViT's CLS tokens of the last ``n`` blocks, each through the final norm, concatenated
  (DINO/iBOT ``eval_linear.py``: ``n_last_blocks``, 4 for ViT-S).
* ``cls<n>+avg``: the same plus the mean patch token of the last block (``avgpool_patchtokens``,
  used with ``n = 1`` for ViT-B).
"""

from __future__ import annotations

import re
from typing import cast

import torch
from timm.models import VisionTransformer
from torch import nn

__all__ = ["FeatureVariants", "default_variants", "family_of", "parse_variant"]

_CLS = re.compile(r"^cls(\d+)(\+avg)?$")


def family_of(model: nn.Module) -> str:
    """``"vit"`` for a timm VisionTransformer, else ``"cnn"``."""
    return "vit" if isinstance(model, VisionTransformer) else "cnn"


def default_variants(model: nn.Module) -> list[str]:
    """The paper protocol's feature: CNN ``pool``; ViT-S (width <= 384) ``cls4``; wider ViTs
    ``cls1+avg``. A ViT with fewer than 4 blocks (the smoke backbones) gets the CLS tokens of all
    its blocks, ``cls<depth>``."""
    if family_of(model) == "cnn":
        return ["pool"]
    width = getattr(model, "embed_dim", 768)
    assert isinstance(width, int)
    if width > 384:
        return ["cls1+avg"]
    blocks = getattr(model, "blocks", None)
    depth = len(blocks) if isinstance(blocks, nn.Sequential) else 4
    return [f"cls{min(4, max(depth, 1))}"]


def parse_variant(name: str) -> tuple[int, bool]:
    """``(n last blocks, with mean patch token)`` of a ``cls`` variant; ``(0, False)`` for ``pool``.

    Raises:
        ValueError: an unknown variant name.
    """
    if name == "pool":
        return 0, False
    match = _CLS.match(name)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"unknown feature variant {name!r}: use pool, cls<n> or cls<n>+avg")
    return int(match.group(1)), match.group(2) is not None


def _int_attribute(model: nn.Module, name: str) -> int:
    value = getattr(model, name, None)
    if not isinstance(value, int):
        raise ValueError(f"{type(model).__name__} has no integer {name!r} (not a timm model?)")
    return value


class FeatureVariants(nn.Module):
    """Wraps a frozen timm model; ``forward(x)`` gives every variant from one pass.

    Args:
        model: timm model built with ``num_classes=0``.
        variants: variant names (see the module docstring).

    Raises:
        ValueError: a ``cls`` variant on a model that is not a ViT, or more blocks than it has.
    """

    def __init__(self, model: nn.Module, variants: list[str]) -> None:
        super().__init__()
        self.model = model
        self.variants = list(variants)
        self.parsed = {v: parse_variant(v) for v in self.variants}
        self.blocks = max((n for n, _ in self.parsed.values()), default=0)
        if self.blocks:
            if not isinstance(model, VisionTransformer):
                raise ValueError(
                    f"feature variants {self.variants} need a ViT; {type(model).__name__} gives "
                    "pool only"
                )
            if self.blocks > len(model.blocks):
                raise ValueError(f"cls{self.blocks}: the model has {len(model.blocks)} blocks")
        self.dims = {v: self._dim(v) for v in self.variants}

    def _dim(self, variant: str) -> int:
        n, avg = self.parsed[variant]
        if n == 0:
            return _int_attribute(self.model, "num_features")
        return _int_attribute(self.model, "embed_dim") * (n + int(avg))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of ``x: float[B, 3, H, W]``: variant -> ``[B, dims[variant]]``."""
        out: dict[str, torch.Tensor] = {}
        if any(n == 0 for n, _ in self.parsed.values()):
            out["pool"] = self.model(x)
        if self.blocks:
            assert isinstance(self.model, VisionTransformer)  # checked in __init__
            found = self.model.forward_intermediates(
                x,
                indices=self.blocks,
                return_prefix_tokens=True,
                norm=True,
                output_fmt="NLC",
                intermediates_only=True,
            )
            # [(patch tokens [B, N, D], prefix tokens [B, P, D])] for the last `blocks` blocks
            layers = cast(list[tuple[torch.Tensor, torch.Tensor]], found)
            for variant, (n, avg) in self.parsed.items():
                if n == 0:
                    continue
                parts = [prefix[:, 0] for _, prefix in layers[-n:]]
                if avg:
                    parts.append(layers[-1][0].mean(dim=1))
                out[variant] = torch.cat(parts, dim=-1)
        return out
