"""Shared pieces of the zoo's timm registration: cfg table, weight resolution, key checks."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, resolve_pretrained_cfg
from torch import nn

from .. import catalog
from ..shapes import check_state_dict, expected_shapes
from ..weights import resolve_cfg_weights


def zoo_default_cfgs(method: str) -> dict[str, Any]:
    """``default_cfgs`` of one method: one pretrained cfg per catalog row, in catalog order.

    The first row of an architecture is its default tag (timm picks the first tag with weights).
    """
    cfgs: dict[str, Any] = generate_default_cfgs(
        {
            entry.name: entry.pretrained_cfg()
            for entry in catalog.CATALOG.values()
            if entry.method == method
        }
    )
    return cfgs


def _check_pretrained(
    state_dict: dict[str, torch.Tensor],
    model: nn.Module,
    *,
    timm_arch: str,
    num_classes: int,
    origin: str,
    then: Callable[..., dict[str, torch.Tensor]] | None,
) -> dict[str, torch.Tensor]:
    # The file must hold exactly the catalog architecture's tensors; the model being built may
    # differ (num_classes, in_chans, img_size), which timm adapts after this filter.
    check_state_dict(
        state_dict,
        expected_shapes(timm_arch, num_classes),
        what=f"Pretrained weights {origin}",
        target=f"{timm_arch} (num_classes={num_classes})",
    )
    return then(state_dict, model) if then is not None else state_dict


def create_zoo_model(
    model_cls: type[nn.Module],
    variant: str,
    pretrained: bool = False,
    *,
    pretrained_cfg: Any = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    cache_dir: Any = None,
    filter_fn: Callable[..., dict[str, torch.Tensor]] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """``build_model_with_cfg`` with the zoo's weight resolution in front of timm's loader.

    With ``pretrained=True`` the weights are found and verified here (explicit file, local weights
    directory, Hub: see :mod:`selfsup_zoo.weights`) and handed to timm as ``file=``, so that timm's
    own classifier and ``in_chans`` adaptation still apply.
    """
    filter_wrapper = None
    if pretrained:
        cfg = resolve_pretrained_cfg(variant, pretrained_cfg, pretrained_cfg_overlay)
        resolved = resolve_cfg_weights(cfg, cache_dir=cache_dir)
        origin = f"for {variant}.{cfg.tag}" if cfg.tag else f"for {variant}"
        if resolved is not None:
            pretrained_cfg_overlay = dict(pretrained_cfg_overlay or {}, file=str(resolved.path))
            origin = f"{resolved.path}"
        timm_arch = catalog.default_entry(variant).timm_arch
        filter_wrapper = partial(
            _check_pretrained,
            timm_arch=timm_arch,
            num_classes=int(cfg.num_classes or 0),
            origin=origin,
            then=filter_fn,
        )
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_cfg=pretrained_cfg,
        pretrained_cfg_overlay=pretrained_cfg_overlay,
        pretrained_filter_fn=filter_wrapper,
        cache_dir=cache_dir,
        **kwargs,
    )
