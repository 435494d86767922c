"""The SERE method: encode (teacher, student), heads, the four losses, their combination.

SERE (MCG-NKU, TPAMI 2023) is iBOT plus spatial and channel feature self-relation distillation.
The student and the EMA teacher are plain timm ``VisionTransformer`` models (so the exported
backbone *is* a timm model); what the official backbone adds for training (mask token, official
position-embedding interpolation, the four SERE relation heads) lives in :mod:`.network`, the
losses in ``selfsup_zoo.training.losses``.

Section numbers (§) refer to ``docs/methods/sere.md``. B images per process, two global views
(224 px -> 14x14 tokens) and L local views (96 px -> 6x6 tokens), C channels, H attention heads;
tensors of several views are view-major (view 1's B rows first). Loss of one step (§3.8)::

    L = (4 - alpha - beta) / 2 * (L_cls + L_mim) + alpha * L_spatial + beta * L_channel

Things kept on purpose because the official code does them (see the § in each comment): the SERE
heads read pre-final-norm tokens, the student's global relations come from masked views, BN
statistics are shared by both global views, no-overlap pairs still count, border samples are
attenuated by zero padding, and parameter groups follow SERE's own weight-decay rule.

Checkpoint convention: ``export_backbone`` returns the **teacher** backbone, as iBOT and DINO
release teacher weights ("backbone" downloads are teacher weights, §5.6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from selfsup_zoo.convert.sere import SERE_HEAD_NAMES
from selfsup_zoo.training.losses.channel_relation import ChannelRelationLoss
from selfsup_zoo.training.losses.ibot import IBOTClsLoss, IBOTPatchLoss
from selfsup_zoo.training.losses.spatial_relation import SpatialRelationLoss
from selfsup_zoo.training.methods.base import Method, StepInfo

from .config import SereConfig
from .geometry import overlap_sampling
from .network import GlobalOutputs, LocalOutputs, SereNetwork, encode_globals
from .schedules import teacher_temp_schedule
from .views import SereViews

#: Per-term values of one step: "cls", "channel", "spatial" map (teacher view, student view) to a
#: scalar, "mim" maps a global view to its [B] per-image losses; views are named g1, g2, l1, ...
Breakdown = dict[str, dict[Any, Tensor]]

#: Method state-dict keys of checkpoints written before the centres moved into the iBOT losses
#: (one micro-batch counter then served both centres) -> today's keys.
_LEGACY_CENTRE_KEYS: dict[str, tuple[str, ...]] = {
    "center": ("cls_loss.center.value",),
    "center_accum": ("cls_loss.center.accum",),
    "center2": ("patch_loss.center.value",),
    "center2_accum": ("patch_loss.center.accum",),
    "accum_count": ("cls_loss.center.count", "patch_loss.center.count"),
}


def _named(terms: Mapping[tuple[int, int], Tensor], names: Sequence[str]) -> dict[Any, Tensor]:
    return {(names[q], names[v]): term.detach() for (q, v), term in terms.items()}


@dataclass(frozen=True)
class _Losses:
    """The unweighted losses of one step, with their terms keyed by (teacher view, student view)
    indices (0, 1 global, 2 + i local i)."""

    cls: Tensor
    cls_terms: dict[tuple[int, int], Tensor]
    patch: Tensor
    mim: list[Tensor]  # per global view, [B] per-image losses
    channel: Tensor
    channel_terms: dict[tuple[int, int], Tensor]
    spatial: Tensor
    spatial_terms: dict[tuple[int, int], Tensor]

    def breakdown(self, n_local: int) -> Breakdown:
        """The terms, detached, with views named g1, g2, l1, ..."""
        names = ["g1", "g2"] + [f"l{i + 1}" for i in range(n_local)]
        return {
            "cls": _named(self.cls_terms, names),
            "mim": {names[q]: per_image.detach() for q, per_image in enumerate(self.mim)},
            "channel": _named(self.channel_terms, names),
            "spatial": _named(self.spatial_terms, names),
        }


class SereMethod(Method):
    """SERE pre-training (iBOT + spatial/channel self-relation) with timm ViTs."""

    name = "sere"

    def __init__(self, config: SereConfig | None = None) -> None:
        super().__init__()
        cfg = config or SereConfig()
        self.config = cfg
        self.student = SereNetwork(cfg, student=True)
        self.teacher = SereNetwork(cfg, student=False)
        # Official teacher init: non-strict copy of the student's parameters and BN buffers (§5.4).
        self.teacher.load_state_dict(self.student.state_dict(), strict=False)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        patch_dim = (
            cfg.out_dim if (cfg.shared_head or cfg.shared_head_teacher) else cfg.patch_out_dim
        )
        self.cls_loss = IBOTClsLoss(
            cfg.out_dim, cfg.student_temp, cfg.center_momentum, cfg.accum_iter
        )
        self.patch_loss = IBOTPatchLoss(
            patch_dim, cfg.student_temp, cfg.center_momentum, cfg.accum_iter
        )
        self.channel_loss = ChannelRelationLoss(cfg.temperature_channel)
        self.spatial_loss = SpatialRelationLoss(cfg.temperature_pixel)
        self.teacher_temps = teacher_temp_schedule(
            cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs, cfg.epochs
        )
        self.teacher_patch_temps = teacher_temp_schedule(
            cfg.warmup_teacher_patch_temp,
            cfg.teacher_patch_temp,
            cfg.warmup_teacher_temp_epochs,
            cfg.epochs,
            start_epoch=cfg.pred_start_epoch,
        )

    # ---- centres (the official ``ibot_loss`` buffers) --------------------------------------------

    @property
    def center(self) -> Tensor:
        """CLS centre [1, K]."""
        return self.cls_loss.center.value

    @property
    def center2(self) -> Tensor:
        """Patch centre [1, 1, K2]."""
        return self.patch_loss.center.value

    @property
    def center_accum(self) -> Tensor:
        """Pending sum of CLS micro-batches [1, K]."""
        return self.cls_loss.center.accum

    @property
    def center2_accum(self) -> Tensor:
        """Pending sum of patch micro-batches [1, 1, K2]."""
        return self.patch_loss.center.accum

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Also load checkpoints that hold the centres under their former flat keys."""
        for old, new_keys in _LEGACY_CENTRE_KEYS.items():
            if prefix + old in state_dict:
                value = state_dict.pop(prefix + old)
                for new in new_keys:
                    state_dict.setdefault(prefix + new, value)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    # ---- modes -----------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> SereMethod:
        """The teacher stays in training mode whatever ``mode`` is: the official teacher is never
        switched to eval, so its SERE BNs always use batch statistics (§5.4, §8 #4)."""
        super().train(mode)
        self.teacher.train(True)
        return self

    # ---- forward ---------------------------------------------------------------------------------

    def temperatures(self, epoch: int) -> tuple[float, float]:
        """Teacher (CLS, patch) temperatures of an epoch; epochs past the schedule keep the last."""
        idx = min(max(epoch, 0), len(self.teacher_temps) - 1)
        return float(self.teacher_temps[idx]), float(self.teacher_patch_temps[idx])

    def forward(self, batch: dict[str, Any], info: StepInfo) -> dict[str, Tensor]:
        terms, _ = self.forward_with_terms(batch, info)
        return terms

    def forward_with_terms(
        self, batch: dict[str, Any], info: StepInfo
    ) -> tuple[dict[str, Tensor], Breakdown]:
        """Forward plus a per-term breakdown (for debugging and the parity tests).

        Args:
            batch: the collated SERE views (see :class:`SereViews`).
            info: the step; its epoch picks the teacher temperatures.

        Returns:
            (terms, breakdown): ``terms["loss"]`` is optimised, the other terms are detached
            scalars for logging; the breakdown is described at :data:`Breakdown`.
        """
        cfg = self.config
        views = SereViews.from_batch(batch)
        device = views.global_crops.device
        temp, temp2 = self.temperatures(info.epoch)
        teacher = self._encode_teacher(views)
        student, local = self._encode_student(views)
        with torch.autocast(device_type=device.type, enabled=False):  # losses in fp32 (§3.9)
            # fp32 copies made once (no copy in fp32 runs); the centre update reuses them.
            t_cls, t_patch = teacher.cls.float(), teacher.patch.float()
            losses = self._losses(views, teacher, student, local, t_cls, t_patch, temp, temp2)
            loss_cls = losses.cls * cfg.lambda1
            loss_mim = losses.patch * cfg.lambda2
            ibot = loss_cls + loss_mim
            total = (
                (4.0 - cfg.alpha - cfg.beta) / 2.0 * ibot
                + cfg.alpha * losses.spatial
                + cfg.beta * losses.channel
            )
            bsz = views.global_crops.shape[1]
            acc = (t_cls[:bsz].argmax(-1) == student.cls[bsz:].argmax(-1)).float().mean()
        self._update_centres(t_cls, t_patch)
        terms = {
            # Not divided by accum_iter: scaling micro-batch losses is the engine's job.
            "loss": total,
            "ibot": ibot.detach(),
            "cls": loss_cls.detach(),
            "patch": loss_mim.detach(),
            "spatial": losses.spatial.detach(),
            "channel": losses.channel.detach(),
            # torch.full fills on the device: no host-to-device copy per step
            "teacher_temp": torch.full((), temp, device=device),
            "teacher_patch_temp": torch.full((), temp2, device=device),
            "acc": acc.detach(),
        }
        return terms, losses.breakdown(views.n_local)

    @torch.no_grad()
    def _encode_teacher(self, views: SereViews) -> GlobalOutputs:
        """Teacher on the unmasked global views, relations of z: the teacher's predictor outputs
        are unused officially (§8 #7)."""
        images = views.global_crops.flatten(0, 1)  # [2, B, 3, H, W] -> [2B, 3, H, W]
        return encode_globals(self.teacher, images, None, use_predictor=False)

    def _encode_student(self, views: SereViews) -> tuple[GlobalOutputs, LocalOutputs | None]:
        """Student on the *masked* global views (§3.1, §8 #3), then on all local views in one call
        through the ``_local`` heads (chosen by view type, not crop count as officially, §8 #6)."""
        images = views.global_crops.flatten(0, 1)
        globals_ = encode_globals(self.student, images, views.masks, use_predictor=True)
        if views.local_crops is None:
            return globals_, None
        tokens, fmap = self.student.encode(views.local_crops.flatten(0, 1))  # [L*B, ...]
        local = LocalOutputs(
            cls=self.student.head.forward_cls(tokens),
            spatial=self.student.pixel_sere_local(fmap, use_predictor=True),
            channel=self.student.channel_sere_local(fmap, use_predictor=True),
            side=fmap.shape[-1],
        )
        return globals_, local

    def _losses(
        self,
        views: SereViews,
        teacher: GlobalOutputs,
        student: GlobalOutputs,
        local: LocalOutputs | None,
        t_cls: Tensor,
        t_patch: Tensor,
        temp: float,
        temp2: float,
    ) -> _Losses:
        """The four losses of one step, unweighted (``t_cls``, ``t_patch``: fp32 teacher logits)."""
        cfg = self.config
        cls, cls_terms = self.cls_loss(
            t_cls, student.cls, None if local is None else local.cls, temp
        )
        patch, mim = self.patch_loss(t_patch, student.patch, views.masks, temp2)
        channel, channel_terms = self.channel_loss(
            teacher.channel, student.channel, None if local is None else local.channel
        )
        sampling = overlap_sampling(
            views.global_boxes,
            views.local_boxes,
            teacher.side,
            local.side if local is not None else 0,
            cfg.overlap_size,
            cfg.local_overlap_size,
            teacher.spatial.device,
        )
        spatial, spatial_terms = self.spatial_loss(
            teacher.spatial, student.spatial, None if local is None else local.spatial, sampling
        )
        return _Losses(cls, cls_terms, patch, mim, channel, channel_terms, spatial, spatial_terms)

    def _update_centres(self, t_cls: Tensor, t_patch: Tensor) -> None:
        """EMA of the raw teacher logits, after the losses used the old centres (§3.4), summed
        over processes through :attr:`collectives` (§8 #16)."""
        collectives = self.collectives
        self.cls_loss.update_center(t_cls, collectives)
        self.patch_loss.update_center(t_patch, collectives)

    # ---- optimisation hooks ---------------------------------------------------------------------

    def param_groups(self) -> list[dict[str, Any]]:
        """SERE's rule (§5.3, §8 #11), not iBOT's: biases and every parameter with more than
        one dimension are decayed (including tokens, mask token, ``weight_g``); only 1-D non-bias
        parameters (LayerNorm and BatchNorm weights) are exempt. Frozen parameters are left out."""
        decay, no_decay = [], []
        for name, p in self.student.named_parameters():
            if not p.requires_grad:
                continue
            if name.endswith(".bias") or p.ndim > 1:
                decay.append(p)
            else:
                no_decay.append(p)
        return [
            {"params": decay, "weight_decay": True, "name": "decay"},
            {"params": no_decay, "weight_decay": False, "name": "no_decay"},
        ]

    def after_backward(self, info: StepInfo) -> None:
        """Last-layer freeze: while ``epoch < freeze_last_layer`` the gradients of every parameter
        whose name contains ``last_layer`` become None, so AdamW skips them entirely, weight decay
        included; with a shared head this covers the patch projection too (§5.4 step 4, §8 #13)."""
        if info.epoch >= self.config.freeze_last_layer:
            return
        for name, p in self.student.named_parameters():
            if "last_layer" in name:
                p.grad = None

    def ema_pairs(self) -> list[tuple[str, Tensor, Tensor]]:
        """Teacher and student parameters paired over the names both branches have (the shared
        :meth:`Method.update_teacher` averages them). The name intersection skips the student's
        ``masked_embed`` (and a student-only ``last_layer2``); BN buffers are not averaged
        (§5.4 step 6, §8 #14)."""
        student = dict(self.student.named_parameters())
        return [(n, t, student[n]) for n, t in self.teacher.named_parameters() if n in student]

    def convert_sync_batchnorm(self) -> None:
        """SyncBatchNorm for every BN of both branches: the SERE heads' (§2.2, §8 #4) and, with
        ``norm_in_head="bn"``, the iBOT head's (the official script converts whole networks).

        Call before building the optimizer: the conversion creates new parameter tensors.
        """
        for branch in (self.student, self.teacher):
            for head_name in (*SERE_HEAD_NAMES, "head"):
                setattr(
                    branch,
                    head_name,
                    nn.SyncBatchNorm.convert_sync_batchnorm(getattr(branch, head_name)),
                )

    def export_backbone(self) -> nn.Module:
        """The teacher's timm ViT (num_classes 0): released SERE/iBOT/DINO weights are teachers'."""
        return self.teacher.backbone
