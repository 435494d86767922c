"""Evaluation of frozen backbones (any timm model): weighted k-NN classification.

The names are loaded on first use, so that ``python -m selfsup_zoo.evaluation.knn`` does not find
its own module already imported by the package (runpy's double-import warning).
"""

from __future__ import annotations

from typing import Any

__all__ = ["extract_features", "knn_evaluate", "knn_predict"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from selfsup_zoo.evaluation import knn

        return getattr(knn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
