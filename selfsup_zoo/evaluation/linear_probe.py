"""The linear probe as a method of the training engine: frozen encoder, one or many linear heads.

One head is the paper protocol (CARE: ``Linear(2048, C)`` then ``BatchNorm1d(C)``, weights
N(0, 0.01), bias 0, ``docs/methods/care.md`` §6; DINO/iBOT ViTs: the same Linear, no BatchNorm).
A grid is heads for every (feature variant, lr scale) pair trained on ONE frozen forward per
batch: each head is its own optimizer group whose ``lr_scale`` multiplies the recipe's lr, and the
loss is the sum of the heads' losses, so each head gets exactly the gradient it would get alone.
A head's initial weights depend only on (``head_seed``, its variant), so the grid's head for a
learning rate starts where a single probe at that learning rate starts.

A grid head whose loss goes non-finite is dropped, not the run: its step is recorded in the
``diverged_at`` buffer (-1 while it trains; checkpointed, so a resume knows), its weights are reset
to zero and it gets no more updates, and the others train on. The engine's NaN stop still ends the
run when the encoder's features are non-finite or when no head is left. Every process takes the
same decision (the flags are summed over processes), so the heads stay identical across ranks.

The encoder stays in eval mode (running BatchNorm statistics, no drop path) whatever ``train()``
is asked, and its parameters never require gradients; the engine's checkpoints still hold it, so a
resumed run needs nothing else.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from timm.models import ResNet, VisionTransformer
from torch import nn

from selfsup_zoo.convert.care import fold_linear_bn
from selfsup_zoo.evaluation.model_loading import create_eval_model
from selfsup_zoo.evaluation.probe_features import FeatureVariants, default_variants, family_of
from selfsup_zoo.training.methods.base import ConfigDict, Method, StepInfo

__all__ = ["LinearProbe", "LinearProbeConfig", "ProbeHead"]


@dataclass
class LinearProbeConfig(ConfigDict):
    """``[method]`` of a linear-probe recipe (``kind = "linear"``)."""

    model: str = "resnet50"  # anything timm.create_model accepts after `import selfsup_zoo`
    random_init: bool = False
    model_seed: int = 0  # torch seed before the model is built (random_init baselines)
    num_classes: int = 1000
    variants: list[str] = field(default_factory=list)  # [] = the family's protocol
    lr_scales: list[float] = field(default_factory=lambda: [1.0])  # x the recipe's lr, per head
    batchnorm: str = "auto"  # auto (CNN: CARE's BatchNorm1d; ViT: none) | yes | no
    head_seed: int = 0


@dataclass(frozen=True)
class ProbeHead:
    """One head of the probe: its module key, feature variant and lr multiplier."""

    key: str
    variant: str
    lr_scale: float


def _head_generator(seed: int, variant: str) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(variant.encode()))


def _zero_through(head: nn.Module) -> torch.Tensor:
    """A loss of 0 whose gradient reaches every parameter of ``head`` as exact zeros (DDP needs
    every parameter in the graph), even when the parameters are no longer finite."""
    return sum(
        (torch.where(p.isfinite(), p, 0.0).sum() * 0.0 for p in head.parameters()),
        torch.zeros((), device=next(head.parameters()).device),
    )


class LinearProbe(Method):
    """Frozen timm encoder + linear heads (see the module docstring).

    ``forward(batch, info)`` reads ``batch["image"]: float[B, 3, H, W]`` and
    ``batch["label"]: int64[B]`` and returns ``{"loss"}`` (the sum over heads) plus
    ``loss/<head>`` per head when there are several.
    """

    name = "linear"

    def __init__(self, cfg: LinearProbeConfig) -> None:
        super().__init__()
        if cfg.batchnorm not in ("auto", "yes", "no"):
            raise ValueError(f"method.batchnorm = {cfg.batchnorm!r}: use auto, yes or no")
        if not cfg.lr_scales or any(s <= 0 for s in cfg.lr_scales):
            raise ValueError(f"method.lr_scales {cfg.lr_scales}: give positive multipliers")
        self.cfg = cfg
        encoder = create_eval_model(cfg.model, random_init=cfg.random_init, seed=cfg.model_seed)
        for p in encoder.parameters():
            p.requires_grad_(False)
        self.family = family_of(encoder)
        variants = list(cfg.variants) or default_variants(encoder)
        self.features = FeatureVariants(encoder, variants)
        use_bn = cfg.batchnorm == "yes" or (cfg.batchnorm == "auto" and self.family == "cnn")
        self.head_specs: list[ProbeHead] = []
        heads: dict[str, nn.Module] = {}
        for variant in variants:
            for i, scale in enumerate(cfg.lr_scales):
                key = f"{variant.replace('+', '_')}__lr{i}"
                self.head_specs.append(ProbeHead(key, variant, float(scale)))
                heads[key] = self._new_head(self.features.dims[variant], use_bn, variant)
        self.heads = nn.ModuleDict(heads)
        # the step at which each head's loss went non-finite; -1 while it trains
        self.diverged_at: torch.Tensor
        self.register_buffer("diverged_at", torch.full((len(self.head_specs),), -1))
        self.train()

    def _new_head(self, dim: int, use_bn: bool, variant: str) -> nn.Sequential:
        linear = nn.Linear(dim, self.cfg.num_classes)
        with torch.no_grad():
            linear.weight.normal_(0.0, 0.01, generator=_head_generator(self.cfg.head_seed, variant))
            linear.bias.zero_()
        layers: list[nn.Module] = [linear]
        if use_bn:
            layers.append(nn.BatchNorm1d(self.cfg.num_classes))
        return nn.Sequential(*layers)

    @property
    def encoder(self) -> nn.Module:
        """The frozen timm model (``num_classes=0``)."""
        return self.features.model

    def train(self, mode: bool = True) -> LinearProbe:
        """Heads follow ``mode``; the encoder stays in eval mode."""
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, batch: dict[str, Any], info: StepInfo) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            feats = self.features(batch["image"])
        labels = batch["label"]
        losses = [
            F.cross_entropy(self.heads[s.key](feats[s.variant].detach()).float(), labels)
            for s in self.head_specs
        ]
        keep = self._surviving_heads(losses, feats, info.step)
        if keep is None:  # features non-finite or no head left: the engine's NaN stop
            kept = losses
        else:
            kept = [
                loss if alive else _zero_through(self.heads[s.key])
                for loss, alive, s in zip(losses, keep, self.head_specs, strict=True)
            ]
        terms: dict[str, torch.Tensor] = {}
        if len(self.head_specs) > 1:
            for spec, loss in zip(self.head_specs, kept, strict=True):
                terms[f"loss/{spec.key}"] = loss.detach()
        terms["loss"] = torch.stack(kept).sum() if len(kept) > 1 else kept[0]
        return terms

    @torch.no_grad()
    def _surviving_heads(
        self, losses: list[torch.Tensor], feats: dict[str, torch.Tensor], step: int
    ) -> list[bool] | None:
        """Which heads train on (and record the newly diverged ones), or None for a NaN stop.

        A head is diverged when its loss is non-finite on any process; ``None`` when the features
        are non-finite on any process or when no head would be left.
        """
        bad = torch.stack([~torch.isfinite(loss) for loss in losses]).float()
        feats_bad = sum(float(~torch.isfinite(f).all()) for f in feats.values())
        flags = torch.cat([bad, bad.new_tensor([feats_bad])])
        self.collectives.all_reduce_sum_([flags])
        alive = (self.diverged_at < 0) & (flags[:-1] == 0).to(self.diverged_at.device)
        if float(flags[-1]) > 0 or not bool(alive.any()):
            return None
        newly = (self.diverged_at < 0) & ~alive
        self.diverged_at[newly] = step
        return [bool(a) for a in alive.tolist()]

    def after_backward(self, info: StepInfo) -> None:
        """A diverged head is reset to zero weights (finite outputs) and skips the update."""
        with torch.no_grad():
            for spec, at in zip(self.head_specs, self.diverged_at.tolist(), strict=True):
                if at < 0:
                    continue
                head = self.heads[spec.key]
                for p in head.parameters():
                    p.zero_()
                    p.grad = None  # the optimizer skips it (no momentum, no weight decay)
                bn = self.head_batchnorm(spec.key)
                if bn is not None:
                    bn.reset_parameters()

    def diverged(self) -> dict[str, int]:
        """Head key -> the 0-based step at which its loss went non-finite (dropped heads only)."""
        return {
            s.key: int(at)
            for s, at in zip(self.head_specs, self.diverged_at.tolist(), strict=True)
            if at >= 0
        }

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every head's logits for ``images: float[B, 3, H, W]``: key -> ``[B, C]``."""
        feats = self.features(images)
        return {s.key: self.heads[s.key](feats[s.variant]) for s in self.head_specs}

    def output_keys(self) -> list[str]:
        """The keys of :meth:`logits`: one per head."""
        return [s.key for s in self.head_specs]

    def param_groups(self) -> list[dict[str, Any]]:
        return [
            {
                "params": list(self.heads[s.key].parameters()),
                "name": s.key,
                "weight_decay": True,
                "lr_scale": s.lr_scale,
            }
            for s in self.head_specs
        ]

    def ema_pairs(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        return []  # no teacher

    def convert_sync_batchnorm(self) -> None:
        """The heads' BatchNorm1d see the whole global batch (the encoder's are frozen)."""
        self.heads = nn.SyncBatchNorm.convert_sync_batchnorm(self.heads)

    def export_backbone(self) -> nn.Module:
        return self.encoder

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """As ``nn.Module.load_state_dict``, with a clear error for a head whose input width does
        not fit this model's features (a probe saved for another model)."""
        for spec in self.head_specs:
            saved = state_dict.get(f"heads.{spec.key}.0.weight")
            expected = self.head_linear(spec.key).weight.shape
            if isinstance(saved, torch.Tensor) and saved.shape != expected:
                raise ValueError(
                    f"saved head {spec.key!r} takes {saved.shape[1]}-d features into "
                    f"{saved.shape[0]} classes, but {self.cfg.model} gives "
                    f"{expected[1]}-d {spec.variant!r} features for {expected[0]} classes: load "
                    "it on the model (and class list) it was trained with"
                )
        if "diverged_at" not in state_dict:  # a checkpoint written before heads could diverge
            state_dict = {**state_dict, "diverged_at": torch.full_like(self.diverged_at, -1)}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def head_linear(self, key: str) -> nn.Linear:
        """The ``Linear`` of head ``key``."""
        head = self.heads[key]
        assert isinstance(head, nn.Sequential)  # built by _new_head
        linear = head[0]
        assert isinstance(linear, nn.Linear)
        return linear

    def head_batchnorm(self, key: str) -> nn.modules.batchnorm._BatchNorm | None:
        """The ``BatchNorm1d`` (or SyncBatchNorm) of head ``key``, None for a ViT probe's."""
        head = self.heads[key]
        assert isinstance(head, nn.Sequential)  # built by _new_head
        if len(head) < 2:
            return None
        bn = head[1]
        assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
        return bn

    def classifier(self, key: str) -> nn.Module:
        """A plain timm classifier equal to head ``key`` in eval mode: the encoder with its
        ``reset_classifier(C)`` head set to the head's Linear, the BatchNorm folded in (float64).

        Raises:
            ValueError: the head reads a ``cls<n>`` feature, which timm's own head cannot take.
        """
        spec = next(s for s in self.head_specs if s.key == key)
        if spec.variant != "pool":
            raise ValueError(
                f"head {key!r} reads {spec.variant!r} features; only a 'pool' head folds into "
                "timm's classifier"
            )
        linear = self.head_linear(key)
        weight, bias = linear.weight.detach(), linear.bias.detach()
        bn = self.head_batchnorm(key)
        if bn is not None:
            weight, bias = fold_linear_bn(weight, bias, bn.state_dict(), eps=bn.eps)
        model = copy.deepcopy(self.encoder).cpu()
        if not isinstance(model, (ResNet, VisionTransformer)):
            raise ValueError(f"exporting a probe of a {type(model).__name__} is not supported")
        model.reset_classifier(self.cfg.num_classes)
        fc = model.get_classifier()
        assert isinstance(fc, nn.Linear)
        with torch.no_grad():
            fc.weight.copy_(weight)
            fc.bias.copy_(bias)
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval()
