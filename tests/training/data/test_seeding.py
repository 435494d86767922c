"""Per-sample seeding: same (seed, epoch, index) -> same views, whatever the number of workers,
the read order or a resume."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from _data_helpers import SMALL_SERE, same_sample
from torch.utils.data import DataLoader

from selfsup_zoo.training.data.care_views import CareViews
from selfsup_zoo.training.data.collate import collate_views
from selfsup_zoo.training.data.dataset import ImageFolderDataset
from selfsup_zoo.training.data.seeding import sample_seeds, seeded_torch
from selfsup_zoo.training.data.sere_views import SereViews


def test_same_seed_epoch_index_same_views(digits_root: Path) -> None:
    ds = ImageFolderDataset(digits_root / "train", SereViews(**SMALL_SERE), seed=3)
    ds.set_epoch(2)
    first = ds[10]
    other = ImageFolderDataset(digits_root / "train", SereViews(**SMALL_SERE), seed=3)
    other.set_epoch(2)
    _ = other[11]  # reading another sample first must not matter
    assert same_sample(first, other[10])
    assert same_sample(first, ds[(2, 10)])  # (epoch, index) items for persistent workers
    assert not torch.equal(first["global_crops"], ds[(3, 10)]["global_crops"])  # other epoch
    assert not torch.equal(first["global_boxes"], ds[11]["global_boxes"])  # other index
    reseeded = ImageFolderDataset(digits_root / "train", SereViews(**SMALL_SERE), seed=4)
    reseeded.set_epoch(2)
    assert not torch.equal(first["global_boxes"], reseeded[10]["global_boxes"])  # other run seed
    assert sample_seeds(0, 1, 2) != sample_seeds(0, 2, 1)


def test_global_rng_state_untouched(digits_root: Path) -> None:
    ds = ImageFolderDataset(digits_root / "train", CareViews(size=16), seed=0)
    torch.manual_seed(1234)
    random.seed(99)
    torch_state = torch.get_rng_state()
    py_state = random.getstate()
    ds[0]
    ds[1]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state


def test_dataloader_workers_and_resume_give_identical_batches(digits_root: Path) -> None:
    ds = ImageFolderDataset(digits_root / "train", SereViews(**SMALL_SERE), seed=5)
    ds.set_epoch(1)
    order = list(range(0, 60, 3))

    def batches(num_workers: int, indices: list[int]) -> list[dict]:
        loader = DataLoader(
            ds, batch_size=4, sampler=indices, num_workers=num_workers, collate_fn=collate_views
        )
        return list(loader)

    serial = batches(0, order)
    parallel = batches(2, order)
    assert len(serial) == len(parallel) == 5
    for a, b in zip(serial, parallel, strict=True):
        assert same_sample(a, b)
    # Resume after two batches (as a restarted job would): the remaining batches are unchanged.
    resumed = batches(2, order[8:])
    for a, b in zip(serial[2:], resumed, strict=True):
        assert same_sample(a, b)
    # Another "rank" reading the same index inside a different batch gets the same views.
    shuffled = batches(0, [order[5], 1, 2, 4])
    assert torch.equal(shuffled[0]["global_crops"][:, 0], serial[1]["global_crops"][:, 1])


def test_seeded_torch_repeats_draws_and_restores_the_caller_state() -> None:
    torch.manual_seed(7)
    before = torch.get_rng_state()
    with seeded_torch(sample_seeds(0, 0, 0)[1]):
        first = torch.rand(4)
    with seeded_torch(sample_seeds(0, 0, 0)[1]):
        again = torch.rand(4)
    with seeded_torch(sample_seeds(0, 0, 1)[1]):
        other = torch.rand(4)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(torch.get_rng_state(), before)
