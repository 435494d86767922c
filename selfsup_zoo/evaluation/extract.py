"""Feature extraction of an image folder with a frozen timm model: batched, sharded, exact.

Images go through the model's own evaluation transform (resize to ``size / crop_pct``, centre
crop, ``timm.data.resolve_data_config``), are normalised on the device and fed in batches, under
autocast on GPUs. Under ``torchrun`` the batches are dealt to the ranks round-robin and gathered on
rank 0 in dataset order; every batch holds the same images whatever the world size, so the result
equals a single process's. Unreadable images are skipped (their rows dropped and counted) or, with
``strict``, stop the run with the file's name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from selfsup_zoo.training.data import EvalView, ImageFolderDataset, collate_views, normalize_uint8
from selfsup_zoo.training.dist import DistInfo

logger = logging.getLogger(__name__)

__all__ = ["EvalTransform", "FeatureSet", "PRECISIONS", "extract_features_of", "open_image_folder"]

#: Accepted ``precision`` values: float32, or autocast to bfloat16 / float16 (CUDA).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Rows sent per gather call: bounds the padded buffers to a few hundred MB at D = 2048.
_GATHER_ROWS = 16384


@dataclass(frozen=True)
class EvalTransform:
    """The evaluation view and normalisation applied before the model (part of the cache key)."""

    size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_model(cls, model: nn.Module) -> EvalTransform:
        """The model's pretrained config, as ``timm.data.resolve_data_config`` reads it."""
        import timm.data  # timm.data pulls in the augmentation stack; only evaluation needs it

        cfg = timm.data.resolve_data_config({}, model=model)
        return cls(
            size=int(cfg["input_size"][-1]),
            crop_pct=float(cfg["crop_pct"]),
            interpolation=str(cfg["interpolation"]),
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
        )

    def view(self) -> EvalView:
        return EvalView(self.size, self.crop_pct, self.interpolation)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FeatureSet:
    """Features of the readable images of one folder, in dataset order.

    Attributes:
        features: float32 [N, D] pooled, or [N, T, D] tokens (T patch tokens / feature-map cells).
        labels: int64 [N], the folder's own class indices.
        indices: int64 [N], each row's image index in the folder (skipped images are absent).
        classes: the folder's class names (label order).
        num_skipped: unreadable images left out.
        seconds: extraction wall time (0 when read from the cache).
    """

    features: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    classes: list[str]
    num_skipped: int = 0
    seconds: float = 0.0


def open_image_folder(
    root: str, transform: EvalTransform | None = None, *, strict: bool = False
) -> ImageFolderDataset:
    """An :class:`ImageFolderDataset` with the evaluation view, refusing empty class folders.

    Raises:
        FileNotFoundError: no folder, no class folders, no images, or a class folder without
            images (the message names them and says what to do).
    """
    dataset = ImageFolderDataset(root, transform.view() if transform else None, strict=strict)
    counts = np.bincount(dataset.targets, minlength=len(dataset.classes))
    empty = [c for c, n in zip(dataset.classes, counts.tolist(), strict=True) if n == 0]
    if empty:
        raise FileNotFoundError(
            f"{dataset.root}: class folders {empty[:5]} hold no images; add images to them or "
            "remove them (every class folder is a class, and an empty one cannot be evaluated)"
        )
    return dataset


def _collate_with_flags(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`collate_views` plus ``"replaced"`` bool [B]: which samples stand in for an
    unreadable file (the dataset substitutes the next readable image; extraction drops them)."""
    flags = torch.tensor([bool(s["num_replaced"]) for s in samples], dtype=torch.bool)
    batch = collate_views(samples)
    batch["replaced"] = flags
    return batch


def _batches(num_images: int, batch_size: int, info: DistInfo) -> list[list[int]]:
    """This rank's batches: batch b holds images [b*B, (b+1)*B) and goes to rank b % world."""
    starts = range(0, num_images, batch_size)
    every = [list(range(s, min(s + batch_size, num_images))) for s in starts]
    return every[info.rank :: info.world_size]


def _embed(model: nn.Module, images: torch.Tensor, tokens: bool) -> torch.Tensor:
    """Pooled [B, D] (``model(x)``, built with ``num_classes=0``) or tokens [B, T, D]."""
    if not tokens:
        out: torch.Tensor = model(images)
        if out.ndim != 2:
            raise ValueError(
                f"pooled features must be [B, D]; the model returned {tuple(out.shape)}. "
                "Create it with num_classes=0 and a global pool, or ask for tokens"
            )
        return out
    # nn.Module types attributes as Tensor | Module; every timm model has forward_features.
    forward_features = cast(Callable[[torch.Tensor], torch.Tensor], model.forward_features)
    out = forward_features(images)
    if out.ndim == 4:  # CNN feature map [B, C, H, W] -> [B, H*W, C]
        out = out.flatten(2).transpose(1, 2)
    if out.ndim != 3:
        raise ValueError(f"forward_features returned {tuple(out.shape)}, not [B, T, D]")
    return out


def _progress(loader: DataLoader[Any], enabled: bool, desc: str) -> Iterable[dict[str, Any]]:
    if not enabled:
        return loader
    try:  # tqdm is an optional dependency (the train/test extras): lazy import
        from tqdm.auto import tqdm
    except ImportError:
        return loader
    bar: Iterable[dict[str, Any]] = tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True)
    return bar


def _gather_to_main(local: torch.Tensor, info: DistInfo) -> list[torch.Tensor]:
    """Every rank's rows of ``local`` [n_r, ...] on rank 0 (empty list elsewhere), in chunks of
    ``_GATHER_ROWS`` rows so that no rank ever holds more than one padded chunk per peer."""
    counts = [torch.zeros(1, dtype=torch.int64, device=info.device) for _ in range(info.world_size)]
    dist.all_gather(counts, torch.tensor([local.shape[0]], device=info.device))
    sizes = [int(c.item()) for c in counts]
    pieces: list[list[torch.Tensor]] = [[] for _ in sizes]
    for start in range(0, max(sizes), _GATHER_ROWS):
        rows = min(_GATHER_ROWS, max(sizes) - start)
        chunk = torch.zeros((rows, *local.shape[1:]), dtype=local.dtype, device=info.device)
        mine = local[start : start + rows]
        chunk[: mine.shape[0]] = mine.to(info.device)
        if info.is_main:
            into = [torch.empty_like(chunk) for _ in sizes]
            dist.gather(chunk, into, dst=0)
            for r, got in enumerate(into):
                keep = max(0, min(rows, sizes[r] - start))
                pieces[r].append(got[:keep].cpu())
        else:
            dist.gather(chunk, None, dst=0)
    return [torch.cat(p) if p else local[:0].cpu() for p in pieces] if info.is_main else []


def _interleave(per_rank: list[torch.Tensor], batch_size: int, world: int) -> torch.Tensor:
    """Undo the round-robin deal: rank r's rows are batches r, r + world, ... in order."""
    cursors = [0] * world
    parts = []
    batch = 0
    while any(cursors[r] < per_rank[r].shape[0] for r in range(world)):
        r = batch % world
        parts.append(per_rank[r][cursors[r] : cursors[r] + batch_size])
        cursors[r] += batch_size
        batch += 1
    return torch.cat(parts)


@torch.inference_mode()
def extract_features_of(
    model: nn.Module,
    dataset: ImageFolderDataset,
    transform: EvalTransform,
    *,
    tokens: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    info: DistInfo | None = None,
    progress: bool = False,
) -> FeatureSet | None:
    """Run the frozen model over ``dataset`` (built with ``transform.view()``).

    Args:
        model: timm model, pooled output with ``num_classes=0`` (or any for ``tokens``).
        dataset: the image folder.
        transform: its evaluation transform (the normalisation is applied here).
        tokens: return ``forward_features`` tokens [N, T, D] instead of pooled [N, D].
        batch_size, num_workers: DataLoader settings (the batch size is per process).
        device: where the model runs.
        precision: "fp32", or autocast "bf16"/"fp16" (outputs are stored as float32).
        info: the process group (torchrun); ``None`` for a single process.
        progress: show a progress bar (give ``True`` on the main process only).

    Returns:
        The :class:`FeatureSet` on rank 0, ``None`` on the other ranks.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    info = info or DistInfo(0, 1, 0, torch.device(device), "")
    device = torch.device(device)
    start_time = time.perf_counter()
    loader = DataLoader(
        dataset,
        batch_sampler=_batches(len(dataset), batch_size, info),
        num_workers=num_workers,
        collate_fn=_collate_with_flags,
    )
    mean = torch.tensor(transform.mean, device=device).view(-1, 1, 1)
    std = torch.tensor(transform.std, device=device).view(-1, 1, 1)
    model.eval().to(device)
    autocast = torch.autocast(
        device.type,
        dtype=_AUTOCAST_DTYPES.get(precision, torch.float32),
        enabled=precision != "fp32",
    )
    outputs: list[torch.Tensor] = []
    replaced: list[torch.Tensor] = []
    for batch in _progress(loader, progress, f"features {dataset.root.name}"):
        images = normalize_uint8(batch["image"].to(device, non_blocking=True), mean, std)
        with autocast:
            out = _embed(model, images, tokens)
        outputs.append(out.float().cpu())
        replaced.append(batch["replaced"])
    local = torch.cat(outputs) if outputs else torch.empty(0)
    flags = torch.cat(replaced) if replaced else torch.empty(0, dtype=torch.bool)
    if info.distributed:
        gathered_feats = _gather_to_main(local, info)
        gathered_flags = _gather_to_main(flags.to(torch.uint8), info)
        if not info.is_main:
            return None
        local = _interleave(gathered_feats, batch_size, info.world_size)
        flags = _interleave(gathered_flags, batch_size, info.world_size).bool()
    keep = ~flags
    indices = torch.arange(len(dataset))[keep]
    skipped = int(flags.sum())
    if skipped:
        logger.warning(
            "%s: %d unreadable images skipped (pass --strict to stop on the first one)",
            dataset.root,
            skipped,
        )
    return FeatureSet(
        features=local[keep],
        labels=torch.from_numpy(dataset.targets)[indices],
        indices=indices,
        classes=list(dataset.classes),
        num_skipped=skipped,
        seconds=time.perf_counter() - start_time,
    )
