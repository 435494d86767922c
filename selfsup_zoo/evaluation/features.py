"""``features``: write the embeddings of image folders to safetensors, with the file list.

The answer to "how do I extract features with this model?"::

    python -m selfsup_zoo.evaluation features MODEL --data DIR --out OUT [--tokens] [--normalize]

For each folder (``--data``, and/or ``--train`` / ``--val``) it writes ``OUT/<split>.safetensors``
holding ``features`` (float32 [N, D] pooled, the model's own ``forward`` with ``num_classes=0``;
with ``--tokens`` [N, T, D], ``forward_features``: a ViT's prefix and patch tokens, a CNN's feature
map flattened to H*W cells) and ``labels`` (int64 [N]), and ``OUT/<split>.files.json`` with the
folder, the class names and, row by row, each image's path relative to the folder and its label.
Unreadable images are left out (listed under ``skipped``) unless ``--strict``. Pooled features are
shared with the k-NN protocol through the feature cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from selfsup_zoo._io import atomic_write_text
from selfsup_zoo.evaluation.extract import EvalTransform, FeatureSet
from selfsup_zoo.evaluation.model_loading import EvaluationError
from selfsup_zoo.evaluation.registry import ProtocolResult
from selfsup_zoo.evaluation.session import EvalSession
from selfsup_zoo.training.data import ImageFolderDataset

logger = logging.getLogger(__name__)

__all__ = ["NEEDS_SPLITS", "SUMMARY", "add_arguments", "file_list", "run"]

SUMMARY = "write pooled (or token) embeddings of image folders to safetensors"
#: The folders are the protocol's own options (any of --data, --train, --val).
NEEDS_SPLITS = False
_SPLITS = ("data", "train", "val")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The folders and the output kind."""
    group = parser.add_argument_group("features")
    group.add_argument("--data", default=None, help="image folder root/<class>/<image>")
    group.add_argument("--train", default=None, help="a training folder (written as train.*)")
    group.add_argument("--val", default=None, help="a validation folder (written as val.*)")
    group.add_argument(
        "--tokens",
        action="store_true",
        help="forward_features tokens [N, T, D] (ViT tokens, CNN map cells) instead of pooled",
    )
    group.add_argument("--normalize", action="store_true", help="L2-normalise each embedding")


def file_list(dataset: ImageFolderDataset, found: FeatureSet) -> dict[str, Any]:
    """The JSON that names the rows of ``found``.

    Returns:
        ``{"root", "classes", "files": [[relative path, label], ...] (row order),
        "skipped": [relative paths of unreadable images]}``.
    """

    def rel(index: int) -> str:
        return dataset.path(index).relative_to(dataset.root).as_posix()

    kept = set(found.indices.tolist())
    return {
        "root": str(dataset.root),
        "classes": found.classes,
        "files": [
            [rel(i), int(y)]
            for i, y in zip(found.indices.tolist(), found.labels.tolist(), strict=True)
        ],
        "skipped": [rel(i) for i in range(len(dataset)) if i not in kept],
    }


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    # safetensors writes to a path: fill a temporary name, then rename (never half a file).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run(session: EvalSession) -> ProtocolResult | None:
    """Extract every folder given (on every rank), then write them all on the main process."""
    args = session.args
    splits = [s for s in _SPLITS if getattr(args, s)]
    if not splits:
        raise EvaluationError("give at least one folder: --data DIR (or --train / --val)")
    out = session.out_dir()
    if out is None:
        raise EvaluationError("features needs --out DIR")
    datasets = {s: session.image_folder(getattr(args, s), s) for s in splits}
    model = session.model()
    transform = EvalTransform.from_model(model)
    found = {
        s: session.features(model, ds, transform, s, tokens=args.tokens, cache=not args.tokens)
        for s, ds in datasets.items()
    }
    if not session.is_main:
        return None
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, dict[str, float]] = {}
    written: dict[str, dict[str, str]] = {}
    for split, fs in found.items():
        assert fs is not None  # the main process holds every split
        feats = fs.features
        if args.normalize:
            feats = F.normalize(feats, dim=-1)
        tensor_path = out / f"{split}.safetensors"
        list_path = out / f"{split}.files.json"
        meta = {
            "model": args.model,
            "output": "tokens" if args.tokens else "pooled",
            "normalized": str(bool(args.normalize)).lower(),
            "transform": json.dumps(transform.as_dict()),
            "folder_fingerprint": session.fingerprints[split]["fingerprint"],
        }
        _write_safetensors(
            tensor_path, {"features": feats.contiguous(), "labels": fs.labels.contiguous()}, meta
        )
        atomic_write_text(list_path, json.dumps(file_list(datasets[split], fs)) + "\n")
        written[split] = {"features": str(tensor_path), "files": str(list_path)}
        rate = session.extraction.get(split, {}).get("images_per_s")
        metrics[split] = {
            "images": float(feats.shape[0]),
            "dim": float(feats.shape[-1]),
            **({"images_per_s": rate} if rate is not None else {}),
        }
        logger.info("wrote %s %s and %s", split, tuple(feats.shape), tensor_path)
    return ProtocolResult(
        metrics=metrics,
        hyperparameters={"tokens": bool(args.tokens), "normalize": bool(args.normalize)},
        details={
            "outputs": written,
            "shapes": {s: list(fs.features.shape) for s, fs in found.items() if fs is not None},
            "eval_transform": transform.as_dict(),
        },
        title=f"features  {args.model}{' (random init)' if args.random_init else ''} -> {out}",
    )
