"""The networks of CARE: the T-stream transformer, the MLP heads and the two-stream encoder.

One encoder = a timm ``ResNet`` (the C-stream, ``num_classes=0``) whose layer3 output also feeds a
BoTNet-style transformer stack (the T-stream, ``trans``), plus two MLP heads: ``fc1`` on the pooled
layer4 feature (C-stream) and ``fc2`` on the pooled T-stream map. The student's heads carry a
predictor, the teacher's do not. Module and parameter names follow the official keys, so that they
map by identity (``selfsup_zoo.convert.care`` owns that layout). Sections (§) are those of
``docs/methods/care.md``.
"""

from __future__ import annotations

from typing import NamedTuple

import timm
import torch
import torch.nn.functional as F
from timm.models import ResNet
from torch import nn

from .care_config import ATTENTION_IMPLS, CareConfig

__all__ = [
    "PositionEmbedding",
    "TStreamAttention",
    "TStreamBlock",
    "TStream",
    "EncoderOutput",
    "CareEncoder",
]


# --------------------------------------------------------------------------------------------------
# T-stream (§3.2)
# --------------------------------------------------------------------------------------------------


class PositionEmbedding(nn.Module):
    """Absolute 2-D position embedding P[row * W + col] = height[row] + width[col], shared by heads.

    Parameter names ``height``/``width`` match the official ``pos_emb`` keys.
    """

    def __init__(self, fmap_size: int, dim_head: int) -> None:
        super().__init__()
        scale = dim_head**-0.5
        # official init: standard normal scaled by dim_head^-1/2
        self.height = nn.Parameter(torch.randn(fmap_size, dim_head) * scale)
        self.width = nn.Parameter(torch.randn(fmap_size, dim_head) * scale)

    def forward(self) -> torch.Tensor:
        """Returns:
        P, ``[H * W, dim_head]``, row-major token order (index = row * W + col).
        """
        emb = self.height[:, None, :] + self.width[None, :, :]  # [H, W, dim_head]
        return emb.reshape(-1, emb.shape[-1])


class TStreamAttention(nn.Module):
    """Multi-head self-attention over the spatial positions of a map (official ``Attention``).

    The official logits are ``q_s k^T + q_s P^T`` with ``q_s = q * dim_head^-1/2``; since that
    equals ``q_s (k + P)^T`` the position term is folded into the keys, which lets the whole thing
    run as one ``scaled_dot_product_attention`` call (fused kernel, no explicit [HW, HW] logits).
    Channel layout of q/k/v is head-major (channel = head * dim_head + d); tokens are row-major.
    """

    def __init__(
        self, dim: int, fmap_size: int, heads: int, dim_head: int, impl: str = "sdpa"
    ) -> None:
        super().__init__()
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
        self.impl = impl
        self.fmap_size = fmap_size
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.to_qkv = nn.Conv2d(dim, heads * dim_head * 3, 1, bias=False)
        self.pos_emb = PositionEmbedding(fmap_size, dim_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: ``[B, dim, fmap_size, fmap_size]``.

        Returns:
            ``[B, heads * dim_head, fmap_size, fmap_size]``, heads concatenated head-major.
        """
        b, _, h, w = x.shape
        if h != self.fmap_size or w != self.fmap_size:
            raise ValueError(
                f"T-stream attention built for a {self.fmap_size}x{self.fmap_size} map, got {h}x{w}"
            )
        n = h * w
        q, k, v = self.to_qkv(x).chunk(3, dim=1)  # 3 x [B, heads * dim_head, H, W]
        # -> 3 x [B, heads, N, dim_head]
        q, k, v = (t.reshape(b, self.heads, self.dim_head, n).transpose(-1, -2) for t in (q, k, v))
        # cast: under autocast k is low precision while the embedding parameter stays fp32
        pos = self.pos_emb().to(k.dtype)  # [N, dim_head]
        if self.impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k + pos, v, scale=self.scale)  # [B, h, N, d]
        else:
            # official order: scale q, content logits, then add the position logits, softmax
            q = q * self.scale
            # [B, heads, N, N]
            sim = torch.einsum("bhid,bhjd->bhij", q, k) + torch.einsum("bhid,jd->bhij", q, pos)
            out = torch.einsum("bhij,bhjd->bhid", sim.softmax(dim=-1), v)
        return out.transpose(-1, -2).reshape(b, self.heads * self.dim_head, h, w)


class TStreamBlock(nn.Module):
    """One BoTNet bottleneck block; ``shortcut`` and ``net`` indices follow the official keys."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        fmap_size: int,
        proj_factor: int,
        downsample: bool,
        heads: int,
        dim_head: int,
        attention: str = "sdpa",
    ) -> None:
        super().__init__()
        if dim != dim_out or downsample:
            kernel, stride, padding = (3, 2, 1) if downsample else (1, 1, 0)
            # the ReLU *inside* the shortcut is official (§9 #6); the block applies ReLU again
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(dim, dim_out, kernel, stride=stride, padding=padding, bias=False),
                nn.BatchNorm2d(dim_out),
                nn.ReLU(),
            )
        else:
            self.shortcut = nn.Identity()
        attn_dim_in = dim_out // proj_factor
        attn_dim_out = heads * dim_head
        self.net = nn.Sequential(
            nn.Conv2d(dim, attn_dim_in, 1, bias=False),
            nn.BatchNorm2d(attn_dim_in),
            nn.ReLU(),
            TStreamAttention(attn_dim_in, fmap_size, heads, dim_head, attention),
            nn.AvgPool2d(2) if downsample else nn.Identity(),
            nn.BatchNorm2d(attn_dim_out),
            nn.ReLU(),
            nn.Conv2d(attn_dim_out, dim_out, 1, bias=False),
            nn.BatchNorm2d(dim_out),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, dim, f, f]`` -> ``[B, dim_out, f', f']``, ``f' = f // 2`` when down-sampling."""
        out: torch.Tensor = self.act(self.net(x) + self.shortcut(x))
        return out


class TStream(nn.Module):
    """Stack of ``num_layers`` blocks; block 0 down-samples by 2 (stride-2 shortcut, 2x2 avg-pool
    after attention), later blocks attend over the ``fmap_size // 2`` map (the floor matches
    AvgPool2d)."""

    def __init__(
        self,
        dim: int,
        fmap_size: int,
        dim_out: int = 2048,
        proj_factor: int = 4,
        num_layers: int = 5,
        heads: int = 4,
        dim_head: int = 128,
        attention: str = "sdpa",
    ) -> None:
        super().__init__()
        if fmap_size < 2 and num_layers > 1:
            raise ValueError(
                f"T-stream needs a layer3 map of at least 2x2, got fmap_size={fmap_size}"
            )
        self.dim = dim
        self.fmap_size = fmap_size
        blocks = []
        for i in range(num_layers):
            first = i == 0
            blocks.append(
                TStreamBlock(
                    dim=dim if first else dim_out,
                    dim_out=dim_out,
                    fmap_size=fmap_size if first else fmap_size // 2,
                    proj_factor=proj_factor,
                    downsample=first,
                    heads=heads,
                    dim_head=dim_head,
                    attention=attention,
                )
            )
        self.net = nn.Sequential(*blocks)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official net effect (§1.1, §3.2, §9 #4): the ResNet init loop re-initialises every conv
        (kaiming normal, fan_out) and sets every BatchNorm2d to weight 1 / bias 0 *after* the
        T-stream zero-initialised ``net.8.weight``, so that gamma trains from 1. Position embeddings
        keep their randn * dim_head^-1/2 init."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: the layer3 map, ``[B, dim, fmap_size, fmap_size]``.

        Returns:
            ``[B, dim_out, fmap_size // 2, fmap_size // 2]``.

        Raises:
            ValueError: the map does not have the size the position embeddings were built for.
        """
        _, c, h, w = x.shape
        f = self.fmap_size
        if c != self.dim or h != f or w != f:
            raise ValueError(
                f"CARE T-stream expects a [N, {self.dim}, {f}, {f}] layer3 map (input images of "
                f"{16 * f - 15}-{16 * f} px, CareConfig.img_size={16 * f}), got [N, {c}, {h}, {w}] "
                f"(≈{16 * h} px); build the model with img_size matching the training views"
            )
        out: torch.Tensor = self.net(x)
        return out


# --------------------------------------------------------------------------------------------------
# encoder (C-stream + T-stream + heads)
# --------------------------------------------------------------------------------------------------


def _mlp_head(in_dim: int, hidden_dim: int, out_dim: int, predictor: bool) -> nn.Sequential:
    """Projector (indices 0-3), student predictor appended in the same Sequential (4-7), §3.3.
    Linear layers keep PyTorch's default init, as officially."""
    layers: list[nn.Module] = [
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    ]
    if predictor:
        layers += [
            nn.Linear(out_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        ]
    return nn.Sequential(*layers)


def _normalize_fp32(x: torch.Tensor) -> torch.Tensor:
    # §9 #15: the official code normalises under fp16 autocast; we keep normalisation in fp32
    with torch.autocast(device_type=x.device.type, enabled=False):
        return F.normalize(x.float(), p=2, dim=1, eps=1e-12)


class EncoderOutput(NamedTuple):
    """What one encoder gives for one view; B = batch, D = ``out_dim``, f = layer3 map side."""

    proj: torch.Tensor  # [B, D] L2-normalised fc1(pool(layer4)): q (student) / k (teacher)
    att_proj: torch.Tensor  # [B, D] L2-normalised fc2(pool(trans(layer3))): att_q / att_k
    tmap: torch.Tensor  # T-stream output map [B, tstream_dim_out, f/2, f/2]
    pooled: torch.Tensor  # pooled layer4 feature [B, num_features]


class CareEncoder(nn.Module):
    """timm ResNet (``backbone``) + T-stream on layer3 (``trans``) + heads ``fc1``/``fc2``."""

    def __init__(self, config: CareConfig, predictor: bool) -> None:
        super().__init__()
        # zero_init_last=False: the official ResNet has no zero-gamma on bn3 (§1.1)
        backbone = timm.create_model(
            config.arch, pretrained=False, num_classes=0, zero_init_last=False, **config.model_args
        )
        not_a_resnet = f"{config.arch!r} is not a timm ResNet with a 'layer3' stage"
        if not isinstance(backbone, ResNet):
            raise ValueError(not_a_resnet)
        self.backbone = backbone
        layer3 = [fi["num_chs"] for fi in backbone.feature_info if fi["module"] == "layer3"]
        if not layer3 or not isinstance(layer3[0], int):
            raise ValueError(not_a_resnet)
        layer3_chs = layer3[0]
        self.trans = TStream(
            dim=layer3_chs,
            fmap_size=config.fmap_size,
            dim_out=config.tstream_dim_out,
            proj_factor=config.tstream_proj_factor,
            num_layers=config.tstream_layers,
            heads=config.tstream_heads,
            dim_head=config.tstream_dim_head,
            attention=config.attention,
        )
        self.fc1 = _mlp_head(
            self.backbone.num_features, config.hidden_dim, config.out_dim, predictor
        )
        self.fc2 = _mlp_head(config.tstream_dim_out, config.hidden_dim, config.out_dim, predictor)

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        """Args:
            x: one view, ``[B, 3, S, S]`` with ``ceil(S / 16) == config.fmap_size``.

        Returns:
            Both streams' normalised projections (fp32), the T-stream map and the pooled feature.
        """
        bb = self.backbone
        stage = bb.get_submodule  # timm registers layer1-4 by name, out of a type checker's sight
        x = bb.maxpool(bb.act1(bb.bn1(bb.conv1(x))))  # stem: [B, C, S / 4, S / 4]
        x = stage("layer3")(stage("layer2")(stage("layer1")(x)))  # [B, C3, f, f]
        tmap = self.trans(x)  # [B, tstream_dim_out, f // 2, f // 2]
        x = stage("layer4")(x)  # [B, num_features, f / 2, f / 2]
        pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # [B, num_features]
        t_pooled = torch.flatten(F.adaptive_avg_pool2d(tmap, 1), 1)  # [B, tstream_dim_out]
        return EncoderOutput(
            proj=_normalize_fp32(self.fc1(pooled)),
            att_proj=_normalize_fp32(self.fc2(t_pooled)),
            tmap=tmap,
            pooled=pooled,
        )
