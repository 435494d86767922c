"""The training data of a run: the image folder, the step sampler, the loader and the transfer of
each micro-batch to the device, and the walk over global steps that resumes mid-epoch."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from selfsup_zoo.training import data as sdata
from selfsup_zoo.training.data.holdout import IndexSubset, stratified_holdout
from selfsup_zoo.training.dist import DistInfo
from selfsup_zoo.training.recipe import Recipe
from selfsup_zoo.training.sampler import StepSampler

logger = logging.getLogger(__name__)

__all__ = ["MicroBatch", "BatchToDevice", "TrainData", "build_train_data", "iterate_steps"]

MicroBatch = dict[str, Any]  # collated views (see ``selfsup_zoo.training.data.collate_views``)


@dataclass(frozen=True)
class BatchToDevice:
    """Moves a collated batch to the device and turns every uint8 image tensor into normalised
    fp32 (``[..., 3, H, W]``; channels-last for 4-d batches when asked).

    Images stay uint8 through the loader (4x less host memory and transfer); the conversion is
    ToTensor's /255 followed by Normalize's (x-mean)/std, done on the device. Other entries (the
    ``num_replaced`` count, labels) pass through (tensors moved, the rest unchanged).
    """

    device: torch.device
    mean: torch.Tensor  # [3, 1, 1] on the device
    std: torch.Tensor  # [3, 1, 1] on the device
    channels_last: bool

    @classmethod
    def for_recipe(cls, recipe: Recipe, device: torch.device) -> BatchToDevice:
        return cls(
            device,
            torch.tensor(recipe.data.mean, device=device).view(3, 1, 1),
            torch.tensor(recipe.data.std, device=device).view(3, 1, 1),
            recipe.engine.channels_last,
        )

    def __call__(self, batch: MicroBatch) -> MicroBatch:
        out: MicroBatch = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                v = value.to(self.device, non_blocking=True)
                if v.dtype == torch.uint8 and v.dim() >= 4 and v.shape[-3] == 3:
                    v = sdata.normalize_uint8(v, self.mean, self.std)
                    if self.channels_last and v.dim() == 4:
                        v = v.contiguous(memory_format=torch.channels_last)
                out[key] = v
            else:
                out[key] = value
        return out


@dataclass
class TrainData:
    """What feeds the run: ``loader`` yields this rank's micro-batches in ``sampler`` order."""

    dataset: sdata.ImageFolderDataset | IndexSubset
    sampler: StepSampler
    loader: DataLoader
    to_device: Callable[[MicroBatch], MicroBatch]

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    @property
    def accum(self) -> int:
        """Micro-batches per optimizer step on each process."""
        return self.sampler.accum


def _build_dataset(recipe: Recipe, info: DistInfo) -> sdata.ImageFolderDataset:
    d = recipe.data
    if not d.root:
        raise ValueError(
            f"recipe {recipe.name} has no data root: pass --data-root DIR (a folder in ImageNet "
            "layout <root>/<class>/<image>, e.g. .../imagenet/train)"
        )
    root = sdata.resolve_data_root(d.root, sdata.data_cache_dir(d.cache_dir))
    views = sdata.build_views(d.views, d.view_args)
    warm_up = getattr(views, "warm_up", None)
    if warm_up is not None:
        warm_up()  # compiled kernels, built here so that forked workers inherit them
    dataset = sdata.ImageFolderDataset(root, views, seed=recipe.engine.seed, strict=d.strict)
    if d.expected_images and len(dataset) != d.expected_images and info.is_main:
        logger.warning(
            "data root %s holds %d images; the official run used %d (iterations per epoch "
            "and schedules follow the data found)",
            root,
            len(dataset),
            d.expected_images,
        )
    return dataset


def _training_part(
    dataset: sdata.ImageFolderDataset, recipe: Recipe
) -> sdata.ImageFolderDataset | IndexSubset:
    """The folder less its held-out validation split (``data.holdout``), or the whole folder."""
    if recipe.data.holdout <= 0:
        return dataset
    kept, _ = stratified_holdout(dataset.targets, recipe.data.holdout, recipe.data.holdout_seed)
    return IndexSubset(dataset, kept)


def build_train_data(recipe: Recipe, info: DistInfo) -> TrainData:
    """The recipe's data set, sampler and loader for this process.

    Raises:
        ValueError: no data root, or fewer images than one global batch.
    """
    eng, d = recipe.engine, recipe.data
    dataset = _training_part(_build_dataset(recipe, info), recipe)
    micro, _ = eng.batch_layout(info.world_size)
    sampler = StepSampler(
        len(dataset), eng.global_batch, micro, info.world_size, info.rank, eng.seed
    )
    if sampler.steps_per_epoch == 0:
        raise ValueError(
            f"the data set ({len(dataset)} images) is smaller than one global batch "
            f"({eng.global_batch})"
        )
    device = info.device
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=sdata.collate_views,
        num_workers=d.workers,
        pin_memory=d.pin_memory and device.type == "cuda",
        persistent_workers=d.persistent_workers and d.workers > 0,
        prefetch_factor=d.prefetch_factor if d.workers > 0 else None,
        # A private generator: creating loader iterators must not consume the global torch RNG,
        # which the model may use (drop path), or resuming mid-epoch would change it.
        generator=torch.Generator().manual_seed(eng.seed),
    )
    return TrainData(dataset, sampler, loader, BatchToDevice.for_recipe(recipe, device))


def iterate_steps(
    data: TrainData, start_step: int, stop_step: int
) -> Iterator[tuple[int, Iterator[MicroBatch]]]:
    """``(step, micro-batches)`` for every global step in ``[start_step, stop_step)``.

    The micro-batches of a step (``data.accum`` of them, on the device) are read lazily, one per
    forward pass; consume them all before asking for the next step. Each epoch starts a fresh
    loader iterator at the step's position within the epoch, so a resumed run reads on exactly
    where the interrupted one stopped.
    """
    spe = data.steps_per_epoch
    step = start_step
    while step < stop_step:
        epoch = step // spe
        data.sampler.set_position(epoch, step % spe)
        batches = iter(data.loader)
        while step < stop_step and step // spe == epoch:
            yield step, map(data.to_device, itertools.islice(batches, data.accum))
            step += 1
        del batches  # ends this epoch's workers (unless they persist)
