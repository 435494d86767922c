"""CARE backbones as timm models: timm's own ``ResNet``, pretrained cfgs from the catalog.

CARE's encoder is exactly torchvision/timm ResNet v1.5 (same keys, bit-identical outputs:
docs/methods/care.md §1.6), so each builder passes the same architecture kwargs as the timm builder
named in the catalog row (``resnet50``, ``wide_resnet50_2``, ``resnet101``, ``resnet152``).
Registered under module ``care``.
"""

from __future__ import annotations

from typing import Any

from timm.models import register_model
from timm.models.resnet import Bottleneck, ResNet
from torch import nn

from ._builder import create_zoo_model, zoo_default_cfgs

# Must exist before the builders are decorated: register_model reads it by the builder's name.
default_cfgs = zoo_default_cfgs("care")


@register_model
def care_resnet50(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """CARE ResNet-50 (timm ``resnet50``)."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3))
    return create_zoo_model(ResNet, "care_resnet50", pretrained, **dict(model_args, **kwargs))


@register_model
def care_wide_resnet50_2(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """CARE "ResNet-50 (2x)": official ``width=2`` doubles the bottleneck width (timm
    ``wide_resnet50_2``)."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), base_width=128)
    return create_zoo_model(
        ResNet, "care_wide_resnet50_2", pretrained, **dict(model_args, **kwargs)
    )


@register_model
def care_resnet101(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """CARE ResNet-101 (timm ``resnet101``)."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 23, 3))
    return create_zoo_model(ResNet, "care_resnet101", pretrained, **dict(model_args, **kwargs))


@register_model
def care_resnet152(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """CARE ResNet-152 (timm ``resnet152``)."""
    model_args = dict(block=Bottleneck, layers=(3, 8, 36, 3))
    return create_zoo_model(ResNet, "care_resnet152", pretrained, **dict(model_args, **kwargs))
