"""timm registration of the zoo's architectures; importing this package registers them.

``care_*`` builders live in :mod:`.care` and ``sere_*`` in :mod:`.sere`, so that
``timm.list_models(module='care')`` / ``module='sere'`` list them by method.
"""

from . import care, sere

__all__ = ["care", "sere"]
