"""The epoch hook of the linear probe and of fine-tuning: top-1 / top-5 of every output of
``method.logits(images)`` (a probe's heads, a fine-tuned model) on the evaluation splits.

Each process scores a strided share of each split; the counts are summed over processes, so the
numbers are the same on any world size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup_zoo.training import dist as tdist
from selfsup_zoo.training.data import collate_views, normalize_uint8
from selfsup_zoo.training.methods import Method
from selfsup_zoo.training.step import precision_context

__all__ = ["ProbeEvaluator", "ScoresImages"]


class ScoresImages(Protocol):
    """A method that scores images: ``logits(float[B, 3, H, W]) -> {output: float[B, C]}`` with
    the keys of ``output_keys()``."""

    def logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def output_keys(self) -> list[str]: ...


@dataclass
class ProbeEvaluator:
    """``evaluator(method, epoch)`` -> ``{"<split>/<head>/top1": %, "<split>/<head>/top5": %}``.

    Attributes:
        splits: split name -> labelled data set of evaluation views (``uint8`` images).
        mean: normalisation mean (0..1 scale).
        std: normalisation standard deviation.
        batch_size: images per forward per process.
        workers: DataLoader workers.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast).
        info: the process group.
    """

    splits: dict[str, Dataset]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    batch_size: int
    workers: int
    precision: str
    info: tdist.DistInfo

    def __call__(self, method: Method, epoch: int) -> dict[str, float]:
        if not (hasattr(method, "logits") and hasattr(method, "output_keys")):
            raise TypeError(f"{type(method).__name__} has no logits(images) to evaluate")
        out: dict[str, float] = {}
        for split, dataset in self.splits.items():
            out.update(self._score(method, split, dataset))  # type: ignore[arg-type]  # has logits
        return out

    def _score(self, method: ScoresImages, split: str, dataset: Dataset) -> dict[str, float]:
        device = self.info.device
        mean = torch.tensor(self.mean, device=device).view(3, 1, 1)
        std = torch.tensor(self.std, device=device).view(3, 1, 1)
        size = len(dataset)  # type: ignore[arg-type]  # map-style data sets have a length
        share = Subset(dataset, range(self.info.rank, size, self.info.world_size))
        loader = DataLoader(
            share,
            batch_size=self.batch_size,
            num_workers=self.workers,
            collate_fn=collate_views,
            generator=torch.Generator().manual_seed(0),  # leaves the global RNG alone
        )
        keys = method.output_keys()
        counts = torch.zeros(len(keys), 2, dtype=torch.float64, device=device)
        seen = 0
        for batch in loader:
            images = normalize_uint8(batch["image"].to(device), mean, std)
            labels = batch["label"].to(device)
            with precision_context(self.precision, device):
                logits = method.logits(images)
            for i, key in enumerate(keys):
                top = logits[key].float().topk(min(5, logits[key].shape[1]), dim=1).indices
                hits = top == labels[:, None]
                counts[i, 0] += hits[:, 0].sum()
                counts[i, 1] += hits.any(dim=1).sum()
            seen += len(labels)
        total = torch.cat([counts.flatten(), torch.tensor([float(seen)], device=device)])
        total = tdist.all_mean(total, self.info) * self.info.world_size
        n = max(float(total[-1]), 1.0)
        result: dict[str, float] = {}
        for i, key in enumerate(keys):
            result[f"{split}/{key}/top1"] = 100.0 * float(total[2 * i]) / n
            result[f"{split}/{key}/top5"] = 100.0 * float(total[2 * i + 1]) / n
        return result
