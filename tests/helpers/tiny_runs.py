"""Tiny recipes for engine tests: a few steps of SERE or CARE on small image folders."""

from __future__ import annotations

from pathlib import Path

import torch

# The tiny SERE model and views (also for tests that set their own ``engine`` entries).
TINY_SERE_MODEL = [
    "method.arch=vit_tiny_patch16_224",
    "method.model_args={img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2}",
    "method.out_dim=64",
    "method.patch_out_dim=64",
    "method.head_hidden_dim=32",
    "method.head_bottleneck_dim=16",
    "method.drop_path=0.0",
    "data.view_args.local_crops=2",
]
TINY_SERE = [
    *TINY_SERE_MODEL,
    "engine.global_batch=8",
    "engine.epochs=2",
    "engine.log_every=1",
    "engine.progress=false",
    "engine.export_at_end=false",
    "eval.knn_every=0",  # the smoke recipes' periodic k-NN on the digits: off in engine tests
]


def tensors_equal(a: object, b: object, path: str = "") -> list[str]:
    """Paths where two nested checkpoint structures differ (tensors compared with torch.equal)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return [] if (a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)) else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path} keys"]
        return [d for k in a for d in tensors_equal(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path} len"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in tensors_equal(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [path]


def tiny(images: Path, *extra: str) -> list[str]:
    return [*TINY_SERE, f'data.root="{images}"', "data.workers=0", *extra]


TINY_CARE = [
    "method.tstream_dim_out=64",
    "method.hidden_dim=64",
    "method.out_dim=16",
    "optim.base_lr=0.04",
    "engine.global_batch=8",
    "engine.log_every=1",
    "engine.progress=false",
    "engine.export_at_end=false",
    "eval.knn_every=0",
]
