"""Center: the EMA update, micro-batch pooling, and the all-reduce across real processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup_zoo.training.collectives import Collectives, ProcessGroupCollectives
from selfsup_zoo.training.losses.center import Center


def _integer_rows(rows: int, dim: int, seed: int) -> torch.Tensor:
    """Integer-valued rows: their sums are exact in any order, so results compare bit for bit."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-8, 9, (rows, dim), generator=gen).float()


def test_update_is_the_ema_of_the_batch_mean() -> None:
    center = Center((1, 3), momentum=0.9)
    center.value.fill_(1.0)
    rows = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    center.update(rows, Collectives())
    torch.testing.assert_close(center.value, 0.9 * 1.0 + 0.1 * torch.tensor([[2.0, 3.0, 4.0]]))
    assert torch.all(center.accum == 0) and int(center.count) == 0


def test_patch_shaped_centre() -> None:
    center = Center((1, 1, 2), momentum=0.5)
    center.update(torch.tensor([[2.0, 4.0], [4.0, 8.0]]), Collectives())
    assert center.value.shape == (1, 1, 2)
    torch.testing.assert_close(center.value, torch.tensor([[[1.5, 3.0]]]))


def test_micro_batches_are_pooled_into_one_update() -> None:
    a, b = _integer_rows(4, 5, seed=0), _integer_rows(4, 5, seed=1)
    pooled = Center((1, 5), momentum=0.9, accum_iter=2)
    pooled.update(a, Collectives())
    assert torch.all(pooled.value == 0) and int(pooled.count) == 1  # first micro-batch: summed only
    torch.testing.assert_close(pooled.accum, a.sum(0, keepdim=True))
    pooled.update(b, Collectives())
    whole = Center((1, 5), momentum=0.9)
    whole.update(torch.cat((a, b)), Collectives())
    assert torch.equal(pooled.value, whole.value)
    assert torch.all(pooled.accum == 0) and int(pooled.count) == 0


def test_accum_iter_must_be_positive() -> None:
    with pytest.raises(ValueError, match="accum_iter"):
        Center((1, 2), accum_iter=0)


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        rows = _integer_rows(2 * world, 6, seed=3)[2 * rank : 2 * rank + 2]  # this rank's images
        center = Center((1, 6), momentum=0.9)
        center.value.fill_(0.25)
        center.update(rows, ProcessGroupCollectives())
        torch.save(center.value, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_update_equals_the_update_over_the_whole_batch(tmp_path: Path) -> None:
    world = 2
    mp.spawn(_worker, args=(world, str(tmp_path / "store"), str(tmp_path)), nprocs=world)
    single = Center((1, 6), momentum=0.9)
    single.value.fill_(0.25)
    single.update(_integer_rows(2 * world, 6, seed=3), Collectives())
    for rank in range(world):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(got, single.value), rank
