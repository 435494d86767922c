"""Shared pieces of the zoo's timm registration: cfg table, weight resolution, key checks.

Pretrained builds skip the random initialisation: when the verified weights cover every tensor of
the model exactly (same keys and shapes, no classifier or ``in_chans`` adaptation to make), the
model is built on the meta device and the file's tensors are assigned to it
(``load_state_dict(assign=True)``); the outputs equal those of the eager build followed by timm's
loader. Anything else (a changed classifier, ``in_chans``, ``features_only``, a buffer the file
does not hold) takes timm's eager path with the same checks.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, resolve_pretrained_cfg
from torch import nn
from torch.overrides import TorchFunctionMode

from .. import catalog
from ..shapes import check_state_dict, expected_shapes
from ..weights import load_weights, resolve_cfg_weights

_logger = logging.getLogger(__name__)


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


# In-place ops that only set values (initialisers and their arithmetic): on meta tensors they do
# nothing but cost the Python of meta kernels (timm's trunc_normal_ is most of a ViT's build).
_VALUE_OPS = frozenset(
    "normal_ uniform_ zero_ fill_ clamp_ clamp_min_ clamp_max_ mul_ add_ sub_ div_ erfinv_ "
    "copy_ exponential_ bernoulli_ random_ exp_ sqrt_ neg_ abs_".split()
)


class _SkipMetaInit(TorchFunctionMode):
    """Under ``torch.device("meta")``: value-only in-place ops on meta tensors return at once."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        name = getattr(func, "__name__", "")
        if name in _VALUE_OPS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def _assign_pretrained(
    build: Callable[[], nn.Module],
    path: Path,
    check: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]],
) -> nn.Module | None:
    """Build on the meta device and assign the checked weights; None where timm must adapt them.

    Args:
        build: Builds the model without weights (called under ``torch.device("meta")``).
        path: The resolved, header-checked safetensors file.
        check: Key/shape check and the architecture's filter (:func:`_check_pretrained`).

    Returns:
        The model with every parameter and buffer from the file, or None when the file's tensors
        do not match the model one to one (the caller then builds eagerly).
    """
    with torch.device("meta"), _SkipMetaInit():
        model = build()
    state = check(load_weights(path), model)
    target = model.state_dict(keep_vars=True)  # keys, shapes and dtypes only: no detached copies
    if state.keys() != target.keys() or any(state[k].shape != target[k].shape for k in target):
        return None
    # the eager loader copies into the model's dtype; so does this (a no-op for fp32 files)
    model.load_state_dict(
        {k: v.to(target[k].dtype) for k, v in state.items()}, strict=True, assign=True
    )
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        return None  # a tensor outside the state dict (non-persistent buffer): build eagerly
    return model


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
    resolved = None
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
    if filter_wrapper is not None and resolved is not None and not kwargs.get("features_only"):

        def build() -> nn.Module:
            model: nn.Module = build_model_with_cfg(
                model_cls,
                variant,
                False,
                pretrained_cfg=pretrained_cfg,
                pretrained_cfg_overlay=pretrained_cfg_overlay,
                cache_dir=cache_dir,
                **kwargs,
            )
            return model

        assigned = _assign_pretrained(build, resolved.path, filter_wrapper)
        if assigned is not None:
            return assigned
        _logger.debug("%s: weights need adapting, building eagerly", variant)
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
