"""The periodic k-NN of a pre-training run: an epoch hook that measures what would be exported.

``reproduce`` passes :class:`PeriodicKnn` to ``train(..., epoch_hook=...)`` when the recipe's
``[eval]`` table names ``train``/``val`` folders and ``knn_every`` > 0. After each such epoch it
embeds both folders with ``method.export_backbone()`` (the CARE student encoder, the SERE teacher)
in eval mode, through the evaluation transform of the exported hub folder (the run's data config,
or the catalog entry's), sharded across the processes like the k-NN protocol's extraction, and
scores the weighted k-NN of :mod:`selfsup_zoo.evaluation.knn_search` (T 0.07, the recipe's k). The
figures equal the ``knn`` protocol's on the exported folder at that epoch, whatever the number of
processes, and every process returns them. The engine appends them to ``<run>/evaluations.jsonl``::

    {"epoch": 3, "step": 42, "knn_top1": 81.2, "knn_top5": 97.9, "knn_k": 20,
     "knn_images": {"train": 1437, "val": 360}}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import timm.data
import timm.models
import torch
import torch.nn.functional as F

from selfsup_zoo.evaluation.extract import EvalTransform, extract_features_of, open_image_folder
from selfsup_zoo.evaluation.knn import _label_map
from selfsup_zoo.evaluation.knn_search import DEFAULT_TEMPERATURE, knn_accuracy
from selfsup_zoo.training import dist as tdist
from selfsup_zoo.training.data import ImageFolderDataset, data_cache_dir, resolve_data_root
from selfsup_zoo.training.export import data_cfg
from selfsup_zoo.training.methods import Method
from selfsup_zoo.training.recipe import Recipe

logger = logging.getLogger(__name__)

__all__ = ["PeriodicKnn", "export_transform"]


def export_transform(recipe: Recipe) -> EvalTransform:
    """The evaluation transform timm resolves for the hub folder a run of ``recipe`` exports.

    A recipe that regenerates a catalog checkpoint exports with the entry's pretrained cfg; the
    others (smoke runs) with the data config they trained at (``training.export.data_cfg``).
    """
    if recipe.checkpoint:
        cfg = timm.models.get_pretrained_cfg(recipe.checkpoint)
        pretrained = cfg.to_dict() if cfg is not None else {}
    else:
        pretrained = data_cfg(recipe)
    resolved = timm.data.resolve_data_config({}, pretrained_cfg=pretrained)
    return EvalTransform(
        size=int(resolved["input_size"][-1]),
        crop_pct=float(resolved["crop_pct"]),
        interpolation=str(resolved["interpolation"]),
        mean=tuple(float(v) for v in resolved["mean"]),
        std=tuple(float(v) for v in resolved["std"]),
    )


class PeriodicKnn:
    """``hook(method, epoch)`` -> the k-NN metrics of the backbone ``method`` would export now.

    Build it before ``train`` (the folders are scanned at once, so that a wrong one fails before
    any training); the process group is the one ``train`` joined, looked up at the first call.

    Args:
        recipe: the run's recipe (``eval.train``, ``eval.val``, ``eval.knn_k``, data cache, the
            engine's device and backend).
        batch_size: images per forward per process.
        workers: DataLoader workers of the extraction.

    Raises:
        FileNotFoundError, ValueError: a folder is missing, empty, or has classes the training
            folder lacks (raised here, before training starts).
    """

    def __init__(self, recipe: Recipe, *, batch_size: int = 64, workers: int = 0) -> None:
        self.k = recipe.eval.knn_k
        self.engine = recipe.engine
        self.batch_size = batch_size
        self.workers = workers
        self._info: tdist.DistInfo | None = None
        self.transform = export_transform(recipe)
        cache = data_cache_dir(recipe.data.cache_dir)
        self.train_set = self._open(recipe.eval.train, cache)
        self.val_set = self._open(recipe.eval.val, cache)
        self.val_to_train = torch.tensor(
            _label_map(self.train_set.class_to_idx, self.val_set.classes, self.val_set.root)
        )

    def _open(self, spec: str, cache: Path) -> ImageFolderDataset:
        return open_image_folder(str(resolve_data_root(spec, cache)), self.transform)

    @property
    def info(self) -> tdist.DistInfo:
        """The run's processes and device (``init_distributed`` returns the joined group)."""
        if self._info is None:
            self._info = tdist.init_distributed(self.engine.device, self.engine.dist_backend)
        return self._info

    def __call__(self, method: Method, epoch: int) -> dict[str, Any]:
        """Embed both folders with ``method.export_backbone()`` and score the k-NN.

        Args:
            method: the method being trained (the engine put it in eval mode).
            epoch: the 1-based epoch that just ended.

        Returns:
            ``knn_top1``, ``knn_top5`` (%), ``knn_k`` and ``knn_images`` ({"train", "val"}).
        """
        backbone = method.export_backbone()
        info = self.info
        common: dict[str, Any] = dict(
            batch_size=self.batch_size,
            num_workers=self.workers,
            device=info.device,
            precision="bf16" if info.device.type == "cuda" else "fp32",  # as the protocol's "auto"
            info=info,
        )
        train = extract_features_of(backbone, self.train_set, self.transform, **common)
        val = extract_features_of(backbone, self.val_set, self.transform, **common)
        metrics: dict[str, Any] | None = None
        if train is not None and val is not None:  # the main process
            acc = knn_accuracy(
                F.normalize(train.features, dim=1),
                train.labels,
                F.normalize(val.features, dim=1),
                self.val_to_train[val.labels],
                ks=(self.k,),
                temperature=DEFAULT_TEMPERATURE,
                num_classes=len(self.train_set.classes),
                device=info.device,
            )[self.k]
            metrics = {
                "knn_top1": acc["top1"],
                "knn_top5": acc["top5"],
                "knn_k": self.k,
                "knn_images": {
                    "train": int(train.features.shape[0]),
                    "val": int(val.features.shape[0]),
                },
            }
        result: dict[str, Any] = tdist.broadcast_object(metrics, info)
        return result
