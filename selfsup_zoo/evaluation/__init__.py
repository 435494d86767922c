"""Evaluation of frozen backbones (any timm model): weighted k-NN and feature extraction.

``python -m selfsup_zoo.evaluation <protocol> MODEL --train DIR --val DIR [--out DIR]`` runs a
protocol of :data:`~selfsup_zoo.evaluation.registry.PROTOCOLS` and writes ``results.json``.

The names are loaded on first use, so that ``python -m selfsup_zoo.evaluation.knn`` does not find
its own module already imported by the package (runpy's double-import warning).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it
_EXPORTS = {
    "extract_features": "knn",
    "knn_evaluate": "knn",
    "knn_predict": "knn",
    "knn_accuracy": "knn_search",
    "topk_neighbours": "knn_search",
    "EvalTransform": "extract",
    "FeatureSet": "extract",
    "extract_features_of": "extract",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
