"""Weighted k-nearest-neighbour evaluation of frozen features (the DINO/iBOT protocol).

Features are the model's pooled output (``num_classes=0``), L2-normalised. Each test image votes
with its ``k`` most cosine-similar training images, each vote weighted by ``exp(sim / T)``
(DINO: k = 20, T = 0.07). It needs no training, so it is the quickest sign that a backbone learnt
something: the smoke runs use it on the embedded digits set.

Command line::

    python -m selfsup_zoo.evaluation.knn MODEL --train DIR --val DIR [--k 20] [--temperature 0.07]

``MODEL`` is anything ``timm.create_model`` accepts (``care_resnet50``, ``local-dir:<folder>``,
``hf-hub:<repo>``, after ``import selfsup_zoo``); weights are loaded unless ``--random-init``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from selfsup_zoo.training.data import (
    EvalView,
    ImageFolderDataset,
    collate_views,
    data_cache_dir,
    image_folder_classes,
    normalize_uint8,
    resolve_data_root,
)

logger = logging.getLogger(__name__)


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
    """
    dataset = ImageFolderDataset(root, EvalView(size, crop_pct, interpolation))
    remap = None
    if class_to_idx is not None:
        unknown = [c for c in dataset.classes if c not in class_to_idx]
        if unknown:
            raise ValueError(
                f"{root}: class folders {unknown[:5]} have no counterpart among the training classes; "
                "k-NN can only predict classes that have training images, so give both splits the "
                "same class folder names"
            )
        remap = torch.tensor([class_to_idx[c] for c in dataset.classes])
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_views,
    )
    mean_t = torch.tensor(mean, device=device).view(-1, 1, 1)
    std_t = torch.tensor(std, device=device).view(-1, 1, 1)
    model.eval().to(device)
    feats, labels = [], []
    for batch in loader:
        images = normalize_uint8(batch["image"].to(device), mean_t, std_t)
        out = model(images)
        if out.ndim != 2:
            raise ValueError(
                f"k-NN needs pooled features [B, D]; the model returned {tuple(out.shape)}. "
                "Create it with num_classes=0 and a global pool."
            )
        feats.append(F.normalize(out.float(), dim=1).cpu())
        labels.append(batch["label"] if remap is None else remap[batch["label"]])
    return torch.cat(feats), torch.cat(labels)


def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores [M, num_classes] of weighted k-NN voting (features must be L2-normalised)."""
    if num_classes is None:
        num_classes = int(train_labels.max()) + 1
    k = min(k, train_feats.shape[0])
    scores = []
    for start in range(0, test_feats.shape[0], chunk):
        sim = test_feats[start : start + chunk] @ train_feats.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        scores.append(votes)
    return torch.cat(scores)


def knn_evaluate(
    model: nn.Module,
    train_root: str | Path,
    val_root: str | Path,
    *,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Top-1/top-5 accuracy (%) of weighted k-NN with the model's own data config."""
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=model)
    common = dict(
        size=cfg["input_size"][-1],
        crop_pct=cfg["crop_pct"],
        mean=cfg["mean"],
        std=cfg["std"],
        interpolation=cfg["interpolation"],
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
    )
    train_classes = image_folder_classes(train_root)
    train_feats, train_labels = extract_features(model, train_root, **common)
    val_feats, val_labels = extract_features(
        model, val_root, **common, class_to_idx={c: i for i, c in enumerate(train_classes)}
    )
    num_classes = len(train_classes)
    scores = knn_predict(
        train_feats, train_labels, val_feats, k=k, temperature=temperature, num_classes=num_classes
    )
    top = scores.topk(min(5, num_classes), dim=1).indices
    hit = top == val_labels[:, None]
    return {
        "top1": 100.0 * hit[:, 0].float().mean().item(),
        "top5": 100.0 * hit.any(dim=1).float().mean().item(),
        "k": k,
        "temperature": temperature,
        "num_train": int(train_feats.shape[0]),
        "num_val": int(val_feats.shape[0]),
        "feature_dim": int(train_feats.shape[1]),
    }


def main(argv: list[str] | None = None) -> int:
    import timm

    import selfsup_zoo  # noqa: F401  (registers the zoo's architectures with timm)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="timm model name, local-dir:<folder> or hf-hub:<repo>")
    parser.add_argument(
        "--train",
        required=True,
        help="image folder root/<class>/<image> (or embedded:digits/train)",
    )
    parser.add_argument("--val", required=True, help="image folder of the evaluation split")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--random-init", action="store_true", help="do not load weights (baseline)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="torch seed set before the model is built (makes --random-init repeatable)",
    )
    parser.add_argument(
        "--cache-dir",
        default="",
        help="where embedded:... data sets are materialised "
        "(default $SELFSUP_ZOO_CACHE/data or ~/.cache/selfsup_zoo/data)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    cache = data_cache_dir(args.cache_dir)
    train = resolve_data_root(args.train, cache)
    val = resolve_data_root(args.val, cache)
    torch.manual_seed(args.seed)
    model = timm.create_model(args.model, pretrained=not args.random_init, num_classes=0)
    result = knn_evaluate(
        model,
        train,
        val,
        k=args.k,
        temperature=args.temperature,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
    )
    result["model"] = args.model
    print(json.dumps(result, indent=2))
    return 0 if math.isfinite(result["top1"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
