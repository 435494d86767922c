"""Facts measured on a timm architecture for its card: parameters, feature dim, feature maps."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from selfsup_zoo.shapes import feature_dim, meta_model

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFacts:
    params: int
    num_features: int
    feature_info: tuple[tuple[int, int], ...]  # (channels, reduction) per feature level


def model_facts(
    timm_arch: str, model_args: Mapping[str, Any] | None, num_classes: int | None
) -> ModelFacts | None:
    try:
        # The meta device allocates nothing: counting ViT-B's parameters takes milliseconds.
        model = meta_model(timm_arch, num_classes, model_args)
    except Exception as err:  # a smoke run may name an architecture timm cannot build here
        _logger.warning("could not build %s to describe it: %s", timm_arch, err)
        return None
    info = tuple(
        (int(f["num_chs"]), int(f["reduction"])) for f in getattr(model, "feature_info", [])
    )
    return ModelFacts(
        params=sum(p.numel() for p in model.parameters()),
        num_features=feature_dim(model),
        feature_info=info,
    )
