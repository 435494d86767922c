"""Weighted k-nearest-neighbour evaluation of frozen features (the DINO/iBOT protocol).

Features are the model's pooled output (``num_classes=0``), L2-normalised. Each test image votes
with its ``k`` most cosine-similar training images, each vote weighted by ``exp(sim / T)``
(DINO/iBOT: T = 0.07, k in {10, 20, 100, 200}, all from one similarity pass). It needs no
training, so it is the quickest sign that a backbone learnt something: the smoke runs use it on the
embedded digits set. ``--shots n --draws d`` gives few-shot k-NN (n training images per class,
d seeded draws, mean and std).

Command line::

    python -m selfsup_zoo.evaluation knn MODEL --train DIR --val DIR [--out DIR] [--k 10 20 100 200]
    python -m selfsup_zoo.evaluation.knn MODEL --train DIR --val DIR [--k 20]   # JSON on stdout

``MODEL`` is anything ``timm.create_model`` accepts (``care_resnet50``, ``local-dir:<folder>``,
``hf-hub:<repo>``, after ``import selfsup_zoo``); weights are loaded unless ``--random-init``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from selfsup_zoo.evaluation.cli import run_protocol
from selfsup_zoo.evaluation.extract import EvalTransform, extract_features_of, open_image_folder
from selfsup_zoo.evaluation.knn_search import (
    DEFAULT_KS,
    DEFAULT_MEMORY_BUDGET_GB,
    DEFAULT_TEMPERATURE,
    few_shot_indices,
    knn_accuracy,
    knn_votes,
    topk_neighbours,
)
from selfsup_zoo.evaluation.model_loading import EvaluationError
from selfsup_zoo.evaluation.registry import ProtocolModule, ProtocolResult
from selfsup_zoo.evaluation.session import EvalSession

logger = logging.getLogger(__name__)

__all__ = ["SUMMARY", "add_arguments", "extract_features", "knn_evaluate", "knn_predict", "run"]

SUMMARY = "weighted k-NN of frozen features (DINO/iBOT: T 0.07, k 10 20 100 200)"


def _label_map(
    class_to_idx: Mapping[str, int], val_classes: Sequence[str], val_root: object
) -> list[int]:
    """Training label of each validation class (val is labelled by the training class names)."""
    index = class_to_idx
    unknown = [c for c in val_classes if c not in index]
    if unknown:
        raise ValueError(
            f"{val_root}: class folders {unknown[:5]} have no counterpart among the training "
            "classes; k-NN can only predict classes that have training images, so give both "
            "splits the same class folder names"
        )
    return [index[c] for c in val_classes]


@torch.no_grad()
def extract_features(
    model: nn.Module,
    root: str | Path,
    *,
    size: int,
    crop_pct: float,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    interpolation: str = "bilinear",
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    class_to_idx: Mapping[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised pooled features [N, D] (float32, on CPU) and labels [N] of an image folder.

    Labels are the folder's own class indices, or ``class_to_idx[class name]`` when given (so that a
    validation folder is labelled like the training folder even if it lacks some classes).
    Unreadable images are skipped. The protocol itself uses
    :func:`selfsup_zoo.evaluation.extract.extract_features_of` (sharded, cached).
    """
    transform = EvalTransform(size, crop_pct, interpolation, tuple(mean), tuple(std))
    dataset = open_image_folder(str(root), transform)
    remap = None
    if class_to_idx is not None:
        remap = torch.tensor(_label_map(class_to_idx, dataset.classes, root))
    found = extract_features_of(
        model, dataset, transform, batch_size=batch_size, num_workers=num_workers, device=device
    )
    assert found is not None  # a single process is always the main one
    labels = found.labels if remap is None else remap[found.labels]
    return F.normalize(found.features, dim=1), labels


def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = DEFAULT_TEMPERATURE,
    num_classes: int | None = None,
    chunk: int | None = 1024,
) -> torch.Tensor:
    """Class scores [M, num_classes] of weighted k-NN voting (features must be L2-normalised).

    ``k`` is clipped to the number of training features; ``chunk`` test rows are compared at a
    time (``None``: as many as the default memory budget allows).
    """
    if num_classes is None:
        num_classes = int(train_labels.max()) + 1
    top_sim, top_idx = topk_neighbours(train_feats, test_feats, k, chunk_rows=chunk)
    return knn_votes(
        top_sim,
        top_idx,
        train_labels,
        k=top_sim.shape[1],
        temperature=temperature,
        num_classes=num_classes,
    )


def knn_evaluate(
    model: nn.Module,
    train_root: str | Path,
    val_root: str | Path,
    *,
    k: int = 20,
    temperature: float = DEFAULT_TEMPERATURE,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Top-1/top-5 accuracy (%) of weighted k-NN with the model's own data config (no cache)."""
    transform = EvalTransform.from_model(model)
    train_ds = open_image_folder(str(train_root), transform)
    val_ds = open_image_folder(str(val_root), transform)
    remap = torch.tensor(_label_map(train_ds.class_to_idx, val_ds.classes, val_root))
    common: dict[str, Any] = dict(batch_size=batch_size, num_workers=num_workers, device=device)
    train = extract_features_of(model, train_ds, transform, **common)
    val = extract_features_of(model, val_ds, transform, **common)
    assert train is not None and val is not None  # a single process is always the main one
    acc = knn_accuracy(
        F.normalize(train.features, dim=1),
        train.labels,
        F.normalize(val.features, dim=1),
        remap[val.labels],
        ks=(k,),
        temperature=temperature,
        num_classes=len(train_ds.classes),
    )[k]
    return {
        "top1": acc["top1"],
        "top5": acc["top5"],
        "k": k,
        "temperature": temperature,
        "num_train": int(train.features.shape[0]),
        "num_val": int(val.features.shape[0]),
        "feature_dim": int(train.features.shape[1]),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The protocol's hyper-parameters (DINO/iBOT defaults)."""
    group = parser.add_argument_group("k-NN")
    group.add_argument(
        "--k", type=int, nargs="+", default=list(DEFAULT_KS), help="neighbours (several at once)"
    )
    group.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    group.add_argument(
        "--memory-budget-gb",
        type=float,
        default=DEFAULT_MEMORY_BUDGET_GB,
        help="memory for the training bank plus one similarity chunk",
    )
    group.add_argument("--shots", type=int, default=0, help="few-shot: training images per class")
    group.add_argument("--draws", type=int, default=5, help="few-shot: random draws (seeded)")


def _few_shot(
    session: EvalSession,
    bank: torch.Tensor,
    labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
) -> dict[str, dict[str, float]]:
    args = session.args
    per_draw: dict[int, list[tuple[float, float]]] = {k: [] for k in args.k}
    for draw in range(args.draws):
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + draw)
        chosen = few_shot_indices(labels, args.shots, num_classes, generator)
        acc = knn_accuracy(
            bank[chosen],
            labels[chosen],
            queries,
            query_labels,
            ks=args.k,
            temperature=args.temperature,
            num_classes=num_classes,
            memory_budget_gb=args.memory_budget_gb,
            device=session.device,
        )
        for k in args.k:
            per_draw[k].append((acc[k]["top1"], acc[k]["top5"]))
    rows: dict[str, dict[str, float]] = {}
    for k, values in per_draw.items():
        t = torch.tensor(values, dtype=torch.float64)  # [draws, 2]
        std = t.std(dim=0) if len(values) > 1 else torch.zeros(2, dtype=torch.float64)
        rows[f"{args.shots}-shot k={k}"] = {
            "top1": float(t[:, 0].mean()),
            "top1_std": float(std[0]),
            "top5": float(t[:, 1].mean()),
            "top5_std": float(std[1]),
        }
    return rows


def run(session: EvalSession) -> ProtocolResult | None:
    """Extract (or read cached) features of both folders on every rank; search on the main one."""
    args = session.args
    if any(k < 1 for k in args.k) or args.temperature <= 0:
        raise EvaluationError("--k values must be >= 1 and --temperature > 0")
    if args.shots < 0 or (args.shots and args.draws < 1):
        raise EvaluationError("--shots must be >= 0 and --draws >= 1")
    train_ds = session.image_folder(args.train, "train")
    val_ds = session.image_folder(args.val, "val")
    remap = torch.tensor(_label_map(train_ds.class_to_idx, val_ds.classes, val_ds.root))
    model = session.model()
    transform = EvalTransform.from_model(model)
    train = session.features(model, train_ds, transform, "train")
    val = session.features(model, val_ds, transform, "val")
    if train is None or val is None:
        return None
    num_classes = len(train_ds.classes)
    bank = F.normalize(train.features, dim=1)
    queries = F.normalize(val.features, dim=1)
    query_labels = remap[val.labels]
    bank_size = args.shots * num_classes if args.shots else bank.shape[0]
    for k in args.k:
        if k > bank_size:
            session.notes.append(f"k={k} exceeds the {bank_size} training features: clipped")
    acc = knn_accuracy(
        bank,
        train.labels,
        queries,
        query_labels,
        ks=args.k,
        temperature=args.temperature,
        num_classes=num_classes,
        memory_budget_gb=args.memory_budget_gb,
        device=session.device,
        progress=True,
    )
    metrics = {f"k={k}": {"top1": v["top1"], "top5": v["top5"]} for k, v in acc.items()}
    if args.shots:
        metrics.update(_few_shot(session, bank, train.labels, queries, query_labels, num_classes))
    return ProtocolResult(
        metrics=metrics,
        hyperparameters={
            "k": list(args.k),
            "temperature": args.temperature,
            "memory_budget_gb": args.memory_budget_gb,
            "shots": args.shots,
            "draws": args.draws if args.shots else 0,
            "normalisation": "l2",
            "vote_weight": "exp(similarity / temperature)",
        },
        details={
            "num_train": int(bank.shape[0]),
            "num_val": int(queries.shape[0]),
            "feature_dim": int(bank.shape[1]),
            "num_classes": num_classes,
            "k_used": {str(k): int(v["k_used"]) for k, v in acc.items()},
            "eval_transform": transform.as_dict(),
        },
        title=(
            f"k-NN  {args.model}{' (random init)' if args.random_init else ''}: "
            f"{bank.shape[0]} train / {queries.shape[0]} val images, dim {bank.shape[1]}"
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m selfsup_zoo.evaluation.knn``: today's command (k 20 by default, JSON on stdout,
    results.json only with ``--out``)."""
    code, results = run_protocol(
        cast(ProtocolModule, sys.modules[__name__]),  # this module is a protocol module
        argv,
        prog="python -m selfsup_zoo.evaluation.knn",
        name="knn",
        defaults={"k": [20]},
        out_by_default=False,
        print_table=False,
    )
    if results is None:
        return code
    first = results["metrics"][f"k={results['hyperparameters']['k'][0]}"]
    details = results["details"]
    summary = {
        "top1": first["top1"],
        "top5": first["top5"],
        "k": results["hyperparameters"]["k"][0],
        "temperature": results["hyperparameters"]["temperature"],
        "num_train": details["num_train"],
        "num_val": details["num_val"],
        "feature_dim": details["feature_dim"],
        "model": results["model"],
        "metrics": results["metrics"],
        "feature_cache": results["feature_cache"],
    }
    print(json.dumps(summary, indent=2))
    return 0 if first["top1"] is not None and math.isfinite(first["top1"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
