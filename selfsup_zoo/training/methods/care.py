"""CARE: CNN Attention REvitalization (Ge et al., NeurIPS 2021), re-implemented on timm ResNets.

The student (online network) and its EMA, the teacher (target network), are each a
:class:`~.care_networks.CareEncoder`: a timm ``ResNet`` (the C-stream) whose layer3 output also
feeds a transformer stack (the T-stream), with one MLP head per stream. One training step
(``docs/methods/care.md`` §3.4; the official names of the logged terms in brackets)::

    s1, s2 = student(x1), student(x2)     # q, att_q per view
    t1, t2 = teacher(x2), teacher(x1)     # k, att_k: each the target of the *other* view
    con  = BYOL(q1, k1) + BYOL(q2, k2)                            # C-stream BYOL   [con_loss]
    con2 = BYOL(att_q1, att_k1) + BYOL(att_q2, att_k2)            # T-stream BYOL   [con2_loss]
    fea  = sum of MSE(c, sg t) over (q1, att_q1), (q2, att_q2),   # T-stream supervision
           (k1, att_k1), (k2, att_k2)                             # [fea_loss = 100 * fea]
    loss = con + con2 + 100 * fea

The terms are the modules of :mod:`selfsup_zoo.training.losses.byol` and
:mod:`selfsup_zoo.training.losses.t_stream_supervision`; the networks live in
:mod:`.care_networks`, the configuration in :mod:`.care_config`, and the official key layout in
:mod:`selfsup_zoo.convert.care` (re-exported here with the official-checkpoint importer).
Sections (§) are those of ``docs/methods/care.md``.

Smoke-size model for CPU runs (a few seconds per step at batch 4, 64 px): :meth:`CareConfig.smoke`.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import timm
import torch
from torch import nn

from selfsup_zoo.convert.care import (
    STUDENT_PREFIX,
    TEACHER_PREFIX,
    from_official_key,
    from_official_state_dict,
    official_key,
    to_official_state_dict,
)
from selfsup_zoo.convert.loading import load_official
from selfsup_zoo.training.losses.byol import BYOLLoss, byol_per_sample
from selfsup_zoo.training.losses.t_stream_supervision import TStreamSupervisionLoss

from .base import Method, StepInfo
from .care_config import ATTENTION_IMPLS, CareConfig
from .care_networks import (
    CareEncoder,
    EncoderOutput,
    PositionEmbedding,
    TStream,
    TStreamAttention,
    TStreamBlock,
)

__all__ = [
    "ATTENTION_IMPLS",
    "CareConfig",
    "PositionEmbedding",
    "TStreamAttention",
    "TStreamBlock",
    "TStream",
    "CareEncoder",
    "EncoderOutput",
    "CareOutputs",
    "CareMethod",
    "OfficialCheckpointInfo",
    "byol_per_sample",
    "STUDENT_PREFIX",
    "TEACHER_PREFIX",
    "official_key",
    "from_official_key",
    "to_official_state_dict",
    "load_official_checkpoint",
]

log = logging.getLogger(__name__)


@dataclass
class CareOutputs:
    """Everything one CARE forward produces; :meth:`CareMethod.forward` returns ``terms``."""

    s1: EncoderOutput  # student(x1): q1, att_q1
    s2: EncoderOutput  # student(x2): q2, att_q2
    t1: EncoderOutput  # teacher(x2): k1, att_k1
    t2: EncoderOutput  # teacher(x1): k2, att_k2
    mse: dict[str, torch.Tensor]  # the four T-stream supervision terms "q1", "q2", "k1", "k2"
    terms: dict[str, torch.Tensor]  # "loss" (optimised) and the detached logged terms


class CareMethod(Method):
    """CARE student/teacher pair and losses (§3.4-§3.5); the engine owns schedules, EMA timing."""

    name = "care"

    def __init__(self, config: CareConfig | None = None) -> None:
        super().__init__()
        self.config = copy.deepcopy(config) if config is not None else CareConfig()
        self.student = CareEncoder(self.config, predictor=True)
        # The official teacher is built separately and then overwritten by momentum_update(m=0); a
        # copy of the student minus the predictors (indices 4-7) gives the same state (buffers are
        # fresh in both) without a second random init.
        teacher = copy.deepcopy(self.student)
        teacher.fc1 = teacher.fc1[:4]
        teacher.fc2 = teacher.fc2[:4]
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher
        # the loss terms: no parameters, no state (nothing in the state dict)
        self.byol_loss = BYOLLoss()
        self.t_stream_supervision = TStreamSupervisionLoss()

    def set_attention(self, impl: str) -> None:
        """Switch every T-stream attention (student and teacher) between ``"sdpa"`` and
        ``"einsum"``; see :class:`CareConfig` for why both exist. Parameters are untouched."""
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {impl!r}")
        self.config.attention = impl
        for module in self.modules():
            if isinstance(module, TStreamAttention):
                module.impl = impl

    # -- forward -----------------------------------------------------------------------------------

    def compute(self, x1: torch.Tensor, x2: torch.Tensor) -> CareOutputs:
        """One CARE forward on two views.

        Args:
            x1: first view, ``[B, 3, S, S]``.
            x2: second view, ``[B, 3, S, S]``.

        Returns:
            Both networks' outputs on both views, the four supervision terms and the loss terms
            (all fp32, also under autocast).
        """
        s1, s2, t1, t2 = self._encode(x1, x2)  # projections of both streams, both networks
        with torch.autocast(device_type=x1.device.type, enabled=False):  # losses in fp32 (§9 #15)
            # BYOL per stream (each view predicts the other's target): C-stream, then T-stream
            con = self.byol_loss([s1.proj, s2.proj], [t1.proj, t2.proj])
            con2 = self.byol_loss([s1.att_proj, s2.att_proj], [t1.att_proj, t2.att_proj])
            mse = self._t_stream_supervision_terms(s1, s2, t1, t2)
            terms = self._combine(con, con2, mse)
        return CareOutputs(s1=s1, s2=s2, t1=t1, t2=t2, mse=mse, terms=terms)

    def forward(
        self, batch: dict[str, Any], info: StepInfo | None = None
    ) -> dict[str, torch.Tensor]:
        return self.compute(batch["x1"], batch["x2"]).terms

    def _encode(
        self, x1: torch.Tensor, x2: torch.Tensor
    ) -> tuple[EncoderOutput, EncoderOutput, EncoderOutput, EncoderOutput]:
        """Student on each view separately (per-view BN statistics, §9 #18), teacher on the swapped
        views (no gradient): ``t1`` is the target of ``s1``, ``t2`` that of ``s2``."""
        s1 = self.student(x1)
        s2 = self.student(x2)
        with torch.no_grad():
            t1 = self.teacher(x2)
            t2 = self.teacher(x1)
        return s1, s2, t1, t2

    def _t_stream_supervision_terms(
        self, s1: EncoderOutput, s2: EncoderOutput, t1: EncoderOutput, t2: EncoderOutput
    ) -> dict[str, torch.Tensor]:
        """The T-stream output is a stop-gradient target for the C-stream, in both networks. The
        two teacher terms are no-grad constants; they only shift the logged value (§9 #2)."""
        supervise = self.t_stream_supervision
        return {
            "q1": supervise(s1.proj, s1.att_proj),
            "q2": supervise(s2.proj, s2.att_proj),
            "k1": supervise(t1.proj, t1.att_proj),
            "k2": supervise(t2.proj, t2.att_proj),
        }

    def _combine(
        self, con: torch.Tensor, con2: torch.Tensor, mse: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Weighted sum of the three terms, and the detached terms to log (§3.4, §9 #3)."""
        cfg = self.config
        fea = mse["q1"] + mse["q2"] + mse["k1"] + mse["k2"]
        weighted_fea = cfg.lambda_fea * fea
        loss = cfg.con_weight * con + cfg.con2_weight * con2 + weighted_fea
        return {
            "loss": loss,
            "con_loss": con.detach(),
            "con2_loss": con2.detach(),
            # logged like the official code: already multiplied by lambda_fea
            "fea_loss": weighted_fea.detach(),
        }

    # -- engine hooks ------------------------------------------------------------------------------

    def param_groups(self) -> list[dict[str, Any]]:
        # §9 #8: one group, weight decay on everything (BN, biases, position embeddings included)
        return [
            {"params": list(self.student.parameters()), "weight_decay": True, "name": "student"}
        ]

    def ema_pairs(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, teacher tensor, student tensor) for every teacher parameter, paired by name (§3.5,
        §9 #16). The teacher's parameter set is exactly the EMA'd set: encoder, T-stream,
        projectors. Student predictors have no partner; BN buffers are not parameters and are never
        averaged."""
        student = dict(self.student.named_parameters())
        return [(n, t, student[n]) for n, t in self.teacher.named_parameters()]

    def convert_sync_batchnorm(self) -> None:
        """Encoder and head BNs become SyncBatchNorm, the T-stream's stay per-process (§9 #5)."""
        convert = nn.SyncBatchNorm.convert_sync_batchnorm
        for enc in (self.student, self.teacher):
            enc.backbone = convert(enc.backbone)
            enc.fc1 = convert(enc.fc1)
            enc.fc2 = convert(enc.fc2)
            if self.config.sync_tstream_bn:
                enc.trans = convert(enc.trans)

    def export_backbone(self) -> nn.Module:
        """A fresh timm model (plain BatchNorm, CPU, eval mode) holding the **student** encoder's
        weights and BN running statistics: linear evaluation used the student (§2.1, §9 #10)."""
        model = timm.create_model(
            self.config.arch, pretrained=False, num_classes=0, **self.config.model_args
        )
        model.load_state_dict(self.student.backbone.state_dict(), strict=True)
        return model.eval()


# --------------------------------------------------------------------------------------------------
# official checkpoint import (§1.3); the key layout is owned by selfsup_zoo.convert.care
# --------------------------------------------------------------------------------------------------


class OfficialCheckpointInfo(TypedDict):
    """What :func:`load_official_checkpoint` found besides the weights."""

    start_epoch: int | None  # epochs completed, as saved (None when absent)
    num_tensors: int  # entries loaded from ``model``
    optimizer: Any  # the official SGD state dict, unchanged (None when absent)


def load_official_checkpoint(
    method: CareMethod, checkpoint: Mapping[str, Any] | str | os.PathLike[str]
) -> OfficialCheckpointInfo:
    """Load an official full pre-training checkpoint into ``method``, strictly.

    The checkpoint is ``{"start_epoch", "model", "optimizer"}`` (§1.3). The official SGD state
    indexes the student parameters in the order of ``param_groups()[0]["params"]`` (both follow
    module registration: encoder, trans, fc1, fc2); it is checked against our shapes and returned
    unchanged for the engine to load.

    Args:
        method: the model to load into (its architecture and ``img_size`` must match).
        checkpoint: the loaded dict, or a path read with ``selfsup_zoo.convert.load_official``
            (``torch.load(weights_only=True)``).

    Returns:
        ``start_epoch``, ``num_tensors`` and ``optimizer`` (see :class:`OfficialCheckpointInfo`).

    Raises:
        ValueError: no ``model`` entry; any missing, unexpected or mis-shaped entry (the message
            names the official keys); an optimizer state that does not fit the student.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = load_official(checkpoint)
    if not isinstance(checkpoint, Mapping) or "model" not in checkpoint:
        got = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(f"expected an official CARE checkpoint with a 'model' entry, got {got}")
    own = {k: tuple(v.shape) for k, v in method.state_dict().items()}
    state = from_official_state_dict(
        checkpoint["model"], own, f"CareMethod({method.config.arch!r})"
    )
    method.load_state_dict(state, strict=True)

    optimizer = checkpoint.get("optimizer")
    if optimizer is not None:
        _check_official_optimizer(method, optimizer)
    start_epoch = checkpoint.get("start_epoch")
    log.info("loaded official CARE checkpoint: %d tensors, start_epoch=%s", len(state), start_epoch)
    return {
        "start_epoch": int(start_epoch) if start_epoch is not None else None,
        "num_tensors": len(state),
        "optimizer": optimizer,
    }


def _check_official_optimizer(method: CareMethod, state: Mapping[str, Any]) -> None:
    params = method.param_groups()[0]["params"]
    groups = state.get("param_groups", [])
    if len(groups) != 1 or len(groups[0].get("params", [])) != len(params):
        sizes = [len(g.get("params", [])) for g in groups]
        raise ValueError(
            f"official optimizer state should have one group of {len(params)} parameters, "
            f"got {sizes}"
        )
    for pos, idx in enumerate(groups[0]["params"]):
        buf = state.get("state", {}).get(idx, {}).get("momentum_buffer")
        if buf is not None and tuple(buf.shape) != tuple(params[pos].shape):
            raise ValueError(
                f"optimizer momentum buffer {idx} has shape {tuple(buf.shape)}, "
                f"parameter {pos} has {tuple(params[pos].shape)}"
            )
