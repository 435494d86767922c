"""The heads of a SERE branch: the four SERE relation heads and the iBOT projection head.

Section numbers (§) refer to ``docs/methods/sere.md``. Module layouts and parameter names follow
the official ones so that official checkpoints map key for key.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup_zoo.training.losses.channel_relation import channel_relation
from selfsup_zoo.training.losses.spatial_relation import spatial_relation

#: Normalisations the iBOT head MLP supports (official ``--norm_in_head``, without the
#: ``csyncbn``/``psyncbn`` variants).
HEAD_NORMS = (None, "bn", "syncbn", "ln")
#: Activations of the iBOT head MLP (official ``--act_in_head``).
HEAD_ACTS = ("gelu", "relu")


class SereHead(nn.Module):
    """One SERE relation head: projection BN -> ReLU (z), predictor 1x1 conv -> BN -> ReLU (p).

    Module layout and key names follow the official ones (``projection.0``, ``predictor.0/1``) so
    that checkpoints map one to one; the conv keeps PyTorch's default init (§1.1).
    """

    def __init__(self, dim: int, kind: str, num_heads: int = 1) -> None:
        super().__init__()
        if kind not in ("channel", "spatial"):
            raise ValueError(f"kind must be 'channel' or 'spatial', got {kind!r}")
        self.kind = kind
        self.num_heads = num_heads
        self.projection = nn.Sequential(nn.BatchNorm2d(dim), nn.ReLU(inplace=True))
        self.predictor = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, fmap: Tensor, use_predictor: bool) -> Tensor:
        """Relation of p (student) or of z (teacher) for a [B, C, s, s] map."""
        feat = self.projection(fmap)
        if use_predictor:
            feat = self.predictor(feat)
        # Relations in fp32 even under autocast (§3.9, §8 #21).
        with torch.autocast(device_type=fmap.device.type, enabled=False):
            if self.kind == "channel":
                return channel_relation(feat)
            return spatial_relation(feat, self.num_heads)


class WeightNormLinear(nn.Module):
    """Bias-free weight-normalised Linear with the official parameter names ``weight_g`` [out, 1]
    and ``weight_v`` [out, in] (deprecated ``nn.utils.weight_norm`` layout, §2.1, §8 #19):
    effective row r = g_r v_r / ||v_r||."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        # PyTorch's default Linear init: the official last layer is created after the head's own
        # trunc-normal init has run, so v keeps it (§2.1).
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight_v * (
            self.weight_g / torch.linalg.vector_norm(self.weight_v, dim=1, keepdim=True)
        )
        return F.linear(x, weight)


class TokenMLP(nn.Sequential):
    """``nn.Sequential`` whose BatchNorms normalise over every token: a [B, N, C] input is moved to
    [B, C, N] around each BatchNorm, so the statistics pool batch and tokens (the official
    ``CustomSequential``). Other layers act per token as usual."""

    def forward(self, x: Tensor) -> Tensor:
        for module in self:
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and x.dim() > 2:
                x = module(x.movedim(-1, 1)).movedim(1, -1)
            else:
                x = module(x)
        return x


def _head_norm(kind: str | None, dim: int) -> nn.Module | None:
    if kind is None:
        return None
    if kind == "bn":
        return nn.BatchNorm1d(dim)
    if kind == "syncbn":
        return nn.SyncBatchNorm(dim)
    if kind == "ln":
        return nn.LayerNorm(dim)
    raise ValueError(f"unknown head norm {kind!r}; use one of {HEAD_NORMS}")


class IBOTHead(nn.Module):
    """iBOT projection head (§2.1): 3-layer MLP, L2 norm, weight-normalised last layer(s).

    With ``shared`` the patch projection ``last_layer2`` is the same module as ``last_layer`` (the
    state dict lists both names, ``named_parameters`` once), as in the official head. ``norm``
    (official ``--norm_in_head``) puts a BatchNorm/LayerNorm after each hidden Linear, with the
    official module indices (``mlp.0`` Linear, ``mlp.1`` norm, ``mlp.2`` act, ...).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        patch_out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
        shared: bool = True,
        norm: str | None = None,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        if act not in HEAD_ACTS:
            raise ValueError(f"unknown head activation {act!r}; use one of {HEAD_ACTS}")
        layers: list[nn.Module] = []
        for d_in in (in_dim, hidden_dim):
            layers.append(nn.Linear(d_in, hidden_dim))
            norm_layer = _head_norm(norm, hidden_dim)
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(nn.GELU() if act == "gelu" else nn.ReLU())
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = TokenMLP(*layers)
        #: BatchNorm statistics depend on which tokens go through the MLP together.
        self.batch_stats = norm in ("bn", "syncbn")
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        self.last_layer2 = (
            self.last_layer if shared else WeightNormLinear(bottleneck_dim, patch_out_dim)
        )
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad_(False)
            self.last_layer2.weight_g.requires_grad_(False)

    def _embed(self, x: Tensor) -> Tensor:
        return F.normalize(self.mlp(x), dim=-1, p=2)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """[B, 1+N, C] final-normed tokens -> (CLS logits [B, K], patch logits [B, N, K2])."""
        x = self._embed(tokens)
        return self.last_layer(x[:, 0]), self.last_layer2(x[:, 1:])

    def forward_cls(self, tokens: Tensor) -> Tensor:
        """CLS logits only (local crops: the official patch logits of locals are discarded). Without
        BatchNorm the MLP acts per token, so the patch rows are skipped; with it they still go
        through the MLP, because the official BN statistics pool all tokens of the local crops."""
        if self.batch_stats:
            return self.forward(tokens)[0]
        logits: Tensor = self.last_layer(self._embed(tokens[:, 0]))
        return logits
