"""SERE backbones as timm models: timm's own ``VisionTransformer``, cfgs from the catalog.

The official DINO/iBOT-style ViT has timm's key names and shapes and, at 224 px, timm's outputs
(bit-identical with fused attention off: docs/methods/sere.md §1.6), so each builder passes the same
kwargs as timm's ``vit_small_patch16_224`` / ``vit_base_patch16_224``. Registered under module
``sere``.
"""

from __future__ import annotations

from typing import Any

from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from ._builder import create_zoo_model, zoo_default_cfgs

default_cfgs = zoo_default_cfgs("sere")


def _create(variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    # Built directly on VisionTransformer: timm's private ViT factory would silently switch to
    # NaFlexVit under TIMM_USE_NAFLEXVIT. The feature cfg is the one timm's ViT builders use
    # (without it features_only falls back to a wrapper that fails on ViTs); checkpoint_filter_fn
    # resamples pos_embed / patch_embed when img_size or patch_size differ from the weights.
    return create_zoo_model(
        VisionTransformer,
        variant,
        pretrained,
        feature_cfg=dict(out_indices=3, feature_cls="getter"),
        filter_fn=checkpoint_filter_fn,
        **kwargs,
    )


@register_model
def sere_vit_small(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """SERE ViT-S/16 (timm ``vit_small_patch16_224``)."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create("sere_vit_small", pretrained, **dict(model_args, **kwargs))


@register_model
def sere_vit_base(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """SERE ViT-B/16 (timm ``vit_base_patch16_224``)."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return _create("sere_vit_base", pretrained, **dict(model_args, **kwargs))
