"""Full official SERE training checkpoints (``checkpoint.pth``) to and from a :class:`SereMethod`.

The key layout is owned by :mod:`selfsup_zoo.convert.sere`; this module moves tensors between it
and the method. Section numbers (§) refer to ``docs/methods/sere.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from selfsup_zoo.convert.loading import load_official
from selfsup_zoo.convert.sere import (
    IBOT_LOSS_BUFFERS,
    merge_shared_last_layer,
    official_branch,
    training_branch,
    training_key_to_official,
)
from selfsup_zoo.shapes import compare_keys

from .method import SereMethod
from .network import SereNetwork

logger = logging.getLogger(__name__)


def _centre_buffers(method: SereMethod) -> dict[str, Tensor]:
    """The method's centres under their official ``ibot_loss`` names."""
    return {
        "center": method.center,
        "center2": method.center2,
        "center_accum": method.center_accum,
        "center2_accum": method.center2_accum,
    }


def to_official_checkpoint(method: SereMethod) -> dict[str, Any]:
    """Full checkpoint in the official layout (§5.5).

    Args:
        method: the SERE method to export.

    Returns:
        ``student`` / ``teacher`` with ``module.backbone.*`` and ``module.head.*`` keys (both
        ``last_layer`` and ``last_layer2``), ``ibot_loss`` with the centres, and ``args`` as an
        ``argparse.Namespace`` of the config. Tensors are detached copies.
    """

    def branch(net: SereNetwork) -> dict[str, Tensor]:
        return official_branch({k: v.detach().clone() for k, v in net.state_dict().items()})

    centres = _centre_buffers(method)
    return {
        "student": branch(method.student),
        "teacher": branch(method.teacher),
        "ibot_loss": {name: centres[name].detach().clone() for name in IBOT_LOSS_BUFFERS},
        "args": argparse.Namespace(**method.config.to_dict()),
    }


def _load_branch(net: SereNetwork, state: Mapping[str, Tensor], part: str) -> None:
    """Strictly load one official branch into ``net``; ValueError names every wrong key."""
    converted = training_branch(state, part)
    expected = net.state_dict()
    if net.head.last_layer2 is net.head.last_layer:
        merge_shared_last_layer(converted, part)
    missing, unexpected, wrong = compare_keys(
        converted, {k: tuple(v.shape) for k, v in expected.items()}
    )
    problems = []
    if missing:
        problems.append(f"missing keys {[training_key_to_official(k) for k in sorted(missing)]}")
    if unexpected:
        problems.append(
            f"unexpected keys {[training_key_to_official(k) for k in sorted(unexpected)]}"
        )
    for key in sorted(wrong):
        problems.append(
            f"shape of {training_key_to_official(key)}: file {tuple(converted[key].shape)}, "
            f"model {tuple(expected[key].shape)}"
        )
    if problems:
        raise ValueError(f"official checkpoint, {part}: " + "; ".join(problems))
    net.load_state_dict(converted, strict=True)


def load_official_checkpoint(
    method: SereMethod, ckpt: str | os.PathLike[str] | Mapping[str, Any]
) -> None:
    """Load an official SERE full training checkpoint (``checkpoint.pth``) into ``method``.

    Reads ``student`` and ``teacher`` (keys with or without ``module.``; ``weight_g``/``weight_v``
    or the parametrization names; ``last_layer2`` duplicates) and the centres from ``ibot_loss``.
    Files are read with ``torch.load(weights_only=True)``.

    Args:
        method: the method to load into (its config must match the file's shapes).
        ckpt: a path, or the already loaded checkpoint dict.

    Raises:
        ValueError: any missing, unexpected or mis-shaped tensor, naming the keys.
    """
    # load_official: weights_only, with argparse.Namespace allow-listed
    state: Mapping[str, Any] = ckpt if isinstance(ckpt, Mapping) else load_official(ckpt)
    for part in ("student", "teacher", "ibot_loss"):
        if part not in state:
            raise ValueError(f"official checkpoint has no {part!r} entry (keys: {sorted(state)})")
    _load_branch(method.student, state["student"], "student")
    _load_branch(method.teacher, state["teacher"], "teacher")
    centres = state["ibot_loss"]
    known = set(IBOT_LOSS_BUFFERS)
    unexpected = sorted(set(centres) - known)
    if unexpected or "center" not in centres or "center2" not in centres:
        raise ValueError(
            f"ibot_loss: expected center/center2 (+ accumulators), got {sorted(centres)}"
        )
    buffers = _centre_buffers(method)
    with torch.no_grad():
        for name in sorted(known & set(centres)):
            buf = buffers[name]
            value = torch.as_tensor(centres[name])
            if value.numel() != buf.numel():
                raise ValueError(
                    f"ibot_loss.{name}: file shape {tuple(value.shape)}, model {tuple(buf.shape)}"
                )
            buf.copy_(value.reshape(buf.shape))
    logger.info(
        "loaded official SERE checkpoint: student, teacher and centres (%d keys)",
        len(state["student"]),
    )
