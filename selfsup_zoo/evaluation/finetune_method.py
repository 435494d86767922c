"""Full fine-tuning (SERE's protocol, the MAE code base) as a method of the training engine.

Built from timm's own parts, as MAE's ``main_finetune.py`` is: the model from
``timm.create_model(..., num_classes=C, drop_path_rate=...)``; the optimizer groups from
``timm.optim.create_optimizer_v2(..., layer_decay=...)`` (each group's ``lr_scale`` is what the
engine multiplies the scheduled lr by, its weight decay says whether the recipe's applies);
``timm.data.Mixup`` (mixup, cutmix, label smoothing) and ``timm.loss.SoftTargetCrossEntropy``.
The training view is timm's ``create_transform`` (``selfsup_zoo.training.data.timm_view``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from torch import nn

from selfsup_zoo.evaluation.model_loading import create_eval_model
from selfsup_zoo.training.methods.base import ConfigDict, Method, StepInfo

__all__ = ["FineTune", "FineTuneConfig"]


@dataclass
class FineTuneConfig(ConfigDict):
    """``[method]`` of a fine-tuning recipe (``kind = "finetune"``)."""

    model: str = "vit_base_patch16_224"
    random_init: bool = False
    model_seed: int = 0
    num_classes: int = 1000
    global_pool: str = "avg"  # MAE's default: mean patch token + a new fc_norm; "" = the model's
    drop_path: float = 0.1
    layer_decay: float = 0.65
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.1


class FineTune(Method):
    """A timm classifier trained end to end.

    ``forward(batch, info)`` reads ``batch["image"]: float[B, 3, H, W]`` (already normalised by the
    view) and ``batch["label"]: int64[B]``, mixes them in training mode, and returns ``{"loss"}``.
    """

    name = "finetune"

    def __init__(self, cfg: FineTuneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        kwargs: dict[str, Any] = {"drop_path_rate": cfg.drop_path}
        if cfg.global_pool:
            kwargs["global_pool"] = cfg.global_pool
        self.model = create_eval_model(
            cfg.model,
            random_init=cfg.random_init,
            seed=cfg.model_seed,
            num_classes=cfg.num_classes,
            **kwargs,
        )
        self.mixup: Mixup | None = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            self.mixup = Mixup(
                mixup_alpha=cfg.mixup,
                cutmix_alpha=cfg.cutmix,
                prob=cfg.mixup_prob,
                switch_prob=cfg.mixup_switch_prob,
                label_smoothing=cfg.label_smoothing,
                num_classes=cfg.num_classes,
            )
        self.soft_ce = SoftTargetCrossEntropy()
        self.train()

    def forward(self, batch: dict[str, Any], info: StepInfo) -> dict[str, torch.Tensor]:
        images, labels = batch["image"], batch["label"]
        if self.mixup is not None and self.training:
            images, targets = self.mixup(images, labels)
            loss = self.soft_ce(self.model(images).float(), targets)
        else:
            logits = self.model(images).float()
            loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)
        return {"loss": loss}

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"model": [B, C]}`` logits of ``images: float[B, 3, H, W]``."""
        return {"model": self.model(images)}

    def output_keys(self) -> list[str]:
        """The keys of :meth:`logits`."""
        return ["model"]

    def param_groups(self) -> list[dict[str, Any]]:
        """timm's layer-decay groups: ``lr_scale = layer_decay ** (L - layer_id)``; no decay for
        biases, norms, position embedding and class token (``no_weight_decay``)."""
        # lr 1 and weight decay 1 only label the groups; the engine sets both every step.
        optimizer = create_optimizer_v2(
            self.model, "adamw", lr=1.0, weight_decay=1.0, layer_decay=self.cfg.layer_decay
        )
        return [
            {
                "params": list(g["params"]),
                "name": f"group{i}",
                "weight_decay": float(g["weight_decay"]) > 0,
                "lr_scale": float(g.get("lr_scale", 1.0)),
            }
            for i, g in enumerate(optimizer.param_groups)
        ]

    def ema_pairs(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        return []  # no teacher

    def convert_sync_batchnorm(self) -> None:
        """Nothing for a ViT (LayerNorm); a CNN's BatchNorms become SyncBatchNorm."""
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        assert isinstance(converted, nn.Module)
        self.model = converted

    def export_backbone(self) -> nn.Module:
        return self.model
