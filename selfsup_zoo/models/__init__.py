"""timm registration of the zoo's architectures; importing this package registers them.

``care_*`` builders live in :mod:`.care` and ``sere_*`` in :mod:`.sere`, so that
``timm.list_models(module='care')`` / ``module='sere'`` list them by method. A builder returns
timm's ``ResNet`` / ``VisionTransformer``, or timm's feature wrapper with ``features_only=True``,
hence its ``nn.Module`` return type.
"""

from . import care, sere

__all__ = ["care", "sere"]
