"""One SERE branch (student or teacher): a timm ViT with the mask token and the heads.

Section numbers (§) refer to ``docs/methods/sere.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
from timm.models.vision_transformer import Attention, VisionTransformer
from torch import Tensor, nn

from .config import SereConfig
from .geometry import interpolate_pos_embed_official
from .heads import IBOTHead, SereHead


class SereNetwork(nn.Module):
    """One branch (student or teacher): timm ViT + mask token (student) + SERE heads + iBOT head.

    Our key names relative to a branch: ``backbone.<timm key>``, ``masked_embed``,
    ``<sere head>.*``, ``head.*``. The official layout puts the mask token and the SERE heads under
    ``backbone.`` (``selfsup_zoo.convert.sere`` owns that layout).

    Args:
        cfg: the SERE configuration (architecture, heads).
        student: the student has the mask token and drop path; the teacher neither.
    """

    masked_embed: nn.Parameter | None

    def __init__(self, cfg: SereConfig, *, student: bool) -> None:
        super().__init__()
        backbone = timm.create_model(
            cfg.arch,
            pretrained=False,
            num_classes=0,
            drop_path_rate=cfg.drop_path if student else 0.0,
            **cfg.model_args,
        )
        if not isinstance(backbone, VisionTransformer):
            raise ValueError(
                f"unsupported ViT for SERE: {cfg.arch} is not a timm VisionTransformer"
            )
        cls_token, _ = _check_backbone(backbone)
        # Official init of the class token: truncated normal, std 0.02 (§1.1); timm draws it
        # with std 1e-6. Everything else timm initialises as the official code does.
        nn.init.trunc_normal_(cls_token, std=0.02)
        self.backbone = backbone
        dim = backbone.embed_dim
        attention = backbone.blocks[0].attn
        if not isinstance(attention, Attention):
            raise ValueError(f"unsupported ViT for SERE: {type(attention).__name__} attention")
        num_heads = attention.num_heads
        if student:
            # Zero-initialised mask token, applied before the position embedding (§1.1).
            self.masked_embed = nn.Parameter(torch.zeros(1, dim))
        else:
            self.masked_embed = None
        self.channel_sere = SereHead(dim, "channel")
        self.pixel_sere = SereHead(dim, "spatial", num_heads)
        self.channel_sere_local = SereHead(dim, "channel")
        self.pixel_sere_local = SereHead(dim, "spatial", num_heads)
        patch_dim = (
            cfg.out_dim if (cfg.shared_head or cfg.shared_head_teacher) else cfg.patch_out_dim
        )
        self.head = IBOTHead(
            dim,
            cfg.out_dim,
            patch_dim,
            cfg.head_hidden_dim,
            cfg.head_bottleneck_dim,
            # The teacher head keeps the official default (True); it is never optimised anyway.
            norm_last_layer=cfg.norm_last_layer if student else True,
            shared=cfg.shared_head if student else cfg.shared_head_teacher,
            norm=cfg.norm_in_head,
            act=cfg.act_in_head,
        )

    @property
    def patch_size(self) -> tuple[int, int]:
        """(height, width) of a patch in pixels."""
        height, width = self.backbone.patch_embed.patch_size
        return int(height), int(width)

    def encode(self, images: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run the ViT on images, with the mask token where ``mask`` is set.

        Token preparation is done here rather than by timm because the mask token must replace
        patch embeddings before the position embedding is added, and the position embedding must
        use the official interpolation (§1.1, §1.6).

        Args:
            images: [B, 3, H, W].
            mask: [B, h, w] bool over the token grid (student only), or None.

        Returns:
            (final-normed tokens [B, 1 + h*w, C], pre-norm patch map [B, C, h, w]).
        """
        vit = self.backbone
        cls_token, pos_embed = _check_backbone(vit)
        x = vit.patch_embed.proj(images)  # [B, C, h, w]
        bsz, dim, h, w = x.shape
        if mask is not None:
            if self.masked_embed is None:
                raise RuntimeError(
                    "this branch has no mask token (teacher); masks are for the student"
                )
            if mask.shape != (bsz, h, w):
                raise ValueError(f"mask shape {tuple(mask.shape)} != token grid {(bsz, h, w)}")
            token = self.masked_embed.to(x.dtype).reshape(1, dim, 1, 1)
            x = torch.where(mask[:, None].to(torch.bool), token, x)
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat((cls_token.expand(bsz, -1, -1), x), dim=1)
        x = x + interpolate_pos_embed_official(pos_embed, (h, w))
        x = vit.pos_drop(x)
        x = vit.norm_pre(x)
        for block in vit.blocks:
            x = block(x)
        # SERE heads read the last block's tokens before the final LayerNorm (§2.2, §8 #2).
        fmap = x[:, 1:].transpose(1, 2).reshape(bsz, dim, h, w)
        return vit.norm(x), fmap


@dataclass(frozen=True)
class GlobalOutputs:
    """What a branch computes on the two global views (rows 2B, view-major)."""

    cls: Tensor  # [2B, K] CLS logits
    patch: Tensor  # [2B, N, K2] patch logits
    spatial: Tensor  # [2B, H, N, N] spatial self-relation
    channel: Tensor  # [2B, C, C] channel self-relation
    side: int  # token-map side, N = side^2


@dataclass(frozen=True)
class LocalOutputs:
    """What the student computes on the L local views (rows L*B, view-major)."""

    cls: Tensor  # [L*B, K] CLS logits (the patch logits of locals are unused, §3.1)
    spatial: Tensor  # [L*B, H, n, n]
    channel: Tensor  # [L*B, C, C]
    side: int  # token-map side, n = side^2


def encode_globals(
    net: SereNetwork, images: Tensor, masks: Tensor | None, *, use_predictor: bool
) -> GlobalOutputs:
    """One branch on both global views in one call: BN statistics pool the 2B images (§8 #5).

    Args:
        net: the student or the teacher.
        images: [2B, 3, H, W], view 1's B images first.
        masks: [2B, h, w] bool for the student, None for the teacher.
        use_predictor: relations of p (student) or of the projection z (teacher, §8 #7).

    Returns:
        Logits and relations of the 2B rows.
    """
    tokens, fmap = net.encode(images, masks)
    cls, patch = net.head(tokens)
    return GlobalOutputs(
        cls=cls,
        patch=patch,
        spatial=net.pixel_sere(fmap, use_predictor=use_predictor),
        channel=net.channel_sere(fmap, use_predictor=use_predictor),
        side=fmap.shape[-1],
    )


def _check_backbone(vit: VisionTransformer) -> tuple[nn.Parameter, nn.Parameter]:
    """Refuse timm configurations whose token layout the SERE training path does not model.

    Returns:
        (class token [1, 1, C], absolute position embedding [1, 1 + N0, C]).
    """
    problems = []
    if vit.cls_token is None:
        problems.append("no class token")
    if vit.num_prefix_tokens != 1:
        problems.append("prefix/register tokens besides CLS")
    if vit.no_embed_class:
        problems.append("no_embed_class=True")
    if vit.pos_embed is None:
        problems.append("no absolute position embedding")
    if not isinstance(vit.patch_drop, nn.Identity):
        problems.append("patch dropout")
    if problems or vit.cls_token is None or vit.pos_embed is None:
        raise ValueError(f"unsupported ViT for SERE: {', '.join(problems)}")
    return vit.cls_token, vit.pos_embed
