"""What a resume checks before it writes anything, and a resume on another process layout.

* a checkpoint of another recipe or method is refused with both names, the run folder untouched;
* a data folder whose images changed since the checkpoint is refused with both fingerprints and
  image counts, unless allowed; a checkpoint without a fingerprint resumes with a warning;
* a 2-process checkpoint resumes on 1 process with the same global batch (real gloo processes).

Runtime on 2 shared CPU cores: about 50-60 s for the file.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from helpers.tiny_runs import TINY_CARE, tiny

from selfsup_zoo.training.checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from selfsup_zoo.training.engine import train
from selfsup_zoo.training.recipe import load_recipe


def test_checkpoint_of_another_recipe_and_method_is_refused_before_writing(tmp_path, images, cache):
    sere = load_recipe(
        "smoke_sere", tiny(images, "engine.max_steps=1", f'data.cache_dir="{cache}"')
    )
    res = train(sere, tmp_path / "sere")
    care = load_recipe(
        "smoke_care",
        [*TINY_CARE, f'data.root="{images}"', "data.workers=0", f'data.cache_dir="{cache}"'],
    )
    with pytest.raises(CheckpointError) as err:
        train(care, tmp_path / "care", resume=str(res.last_checkpoint))
    msg = str(err.value)
    assert "recipe 'smoke_sere' (method 'sere')" in msg, msg
    assert "recipe 'smoke_care' (method 'care')" in msg, msg
    assert not (tmp_path / "care").exists(), "nothing may be written for a refused resume"


def test_changed_data_folder_is_refused_unless_allowed(tmp_path, images, cache, caplog):
    data = tmp_path / "data"
    shutil.copytree(images, data)

    def recipe(steps: int):
        return load_recipe(
            "smoke_sere",
            tiny(
                data, f"engine.max_steps={steps}", "engine.keep_last=5", f'data.cache_dir="{cache}"'
            ),
        )

    run = tmp_path / "run"
    train(recipe(1), run)
    saved = load_checkpoint(checkpoint_path(run, 1))["data"]
    assert saved["images"] == 48 and len(saved["fingerprint"]) == 64
    before = sorted(p.name for p in run.rglob("*"))

    # One image added (49 images: still 6 steps per epoch, so only the fingerprint tells).
    first = sorted((data / "0").iterdir())[0]
    shutil.copyfile(first, data / "0" / "added.png")
    with pytest.raises(CheckpointError) as err:
        train(recipe(2), run, resume="auto")
    msg = str(err.value)
    assert "48 images" in msg and "49 images" in msg and "--allow-data-change" in msg, msg
    assert saved["fingerprint"][:16] in msg
    assert sorted(p.name for p in run.rglob("*")) == before, "nothing written for the refusal"

    # Forced: resumes, says so, and the new checkpoint records the new folder.
    with caplog.at_level(logging.WARNING):
        res = train(recipe(2), run, resume="auto", allow_data_change=True)
    assert res.step == 2 and "--allow-data-change" in caplog.text
    assert load_checkpoint(checkpoint_path(run, 2))["data"]["images"] == 49

    # A checkpoint written before fingerprints were stored still resumes, with a warning.
    old = load_checkpoint(checkpoint_path(run, 2))
    del old["data"]
    torch.save(old, checkpoint_path(run, 2))
    (data / "0" / "added.png").unlink()  # a change that cannot be seen without a fingerprint
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        res = train(recipe(3), run, resume="auto")
    assert res.step == 3 and "predates data fingerprints" in caplog.text


def _log(run: Path) -> list[dict[str, float]]:
    return [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines()]


def _worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, stats: bool) -> float:
    """max |a - b| / (1e-5 + 1e-4 |a|) over the floating tensors (BN running stats if ``stats``)."""
    worst = 0.0
    for k, v in a.items():
        if v.is_floating_point() and (stats or "running_" not in k):
            worst = max(worst, ((v - b[k]).abs() / (1e-5 + 1e-4 * v.abs())).max().item())
    return worst


def test_two_process_checkpoint_resumes_on_one_process_with_the_same_global_batch(
    tmp_path, images, cache, cli
):
    """2 processes x 4 images for 2 steps, then 1 process for steps 3-4, global batch 8.

    Exact (bit-equal): the steps, the learning rate, weight decay and momentum of every step, and
    the images of every step (the sampler slices one permutation by global step). To float
    tolerance only: the losses and weights, because the 2-process all-reduces (DDP gradients,
    SyncBN statistics, SERE's centres) sum in another order than one process does.

    * 1 process x 8 images (accumulation 1): the same computation as the uninterrupted
      2-process run (SyncBN over the same 8 images), so equal to it to 1e-5 abs + 1e-4 rel
      (observed: 0.002 of that tolerance).
    * 1 process x 2 micro-batches of 4 (accumulation 2): allowed, but not the same computation as
      either uninterrupted run: BatchNorm (SERE's relation heads) normalises each micro-batch of 4
      on its own, where the 2-process SyncBN normalised all 8, and updates its running statistics
      once per micro-batch. Its losses after the switch equal the uninterrupted 1-process
      accumulation-2 run's to rel 1e-4 (observed 1e-7), and its weights are no farther from either
      uninterrupted run than those two are from each other.
    """
    common = tiny(
        images,
        "engine.max_steps=4",
        "engine.ckpt_every_steps=2",
        "engine.keep_last=10",
        f'data.cache_dir="{cache}"',
    )
    two = cli.run(
        cli.command(
            "smoke_sere",
            "--output-dir",
            str(tmp_path),
            "--run-name",
            "two",
            "--set",
            *common,
            "engine.per_device_batch=4",
            nproc=2,
        )
    )
    assert two.returncode == 0, two.stderr[-3000:]
    mid = checkpoint_path(tmp_path / "two", 2)
    assert load_checkpoint(mid)["world_size"] == 2

    runs = {}
    for name, per_device in (("res_acc1", 8), ("res_acc2", 4), ("one_acc2", 4)):
        recipe = load_recipe("smoke_sere", [*common, f"engine.per_device_batch={per_device}"])
        resume = str(mid) if name.startswith("res") else None
        runs[name] = train(recipe, tmp_path / name, resume=resume)
        assert runs[name].step == 4
    rows = {name: _log(tmp_path / name) for name in ("two", *runs)}
    assert [r["step"] for r in rows["res_acc1"]] == [r["step"] for r in rows["res_acc2"]] == [3, 4]
    for name in ("res_acc1", "res_acc2"):
        for r, ref in zip(rows[name], rows["two"][2:], strict=True):
            assert (r["lr"], r["wd"], r["momentum"]) == (ref["lr"], ref["wd"], ref["momentum"])
            assert r["loss"] == pytest.approx(ref["loss"], rel=1e-3)
    for r, ref in zip(rows["res_acc1"], rows["two"][2:], strict=True):
        assert r["loss"] == pytest.approx(ref["loss"], rel=1e-4)
    for r, ref in zip(rows["res_acc2"], rows["one_acc2"][2:], strict=True):
        assert r["loss"] == pytest.approx(ref["loss"], rel=1e-4)

    final = {n: load_checkpoint(checkpoint_path(tmp_path / n, 4))["method"] for n in rows}
    assert _worst(final["two"], final["res_acc1"], stats=True) <= 1.0
    apart = _worst(final["two"], final["one_acc2"], stats=False)
    near_two = _worst(final["two"], final["res_acc2"], stats=False)
    near_one = _worst(final["one_acc2"], final["res_acc2"], stats=False)
    print(
        f"weights / tolerance: uninterrupted 2 vs 1 x accum 2: {apart:.3g}; resumed vs those: "
        f"{near_two:.3g}, {near_one:.3g}"
    )
    assert max(near_two, near_one) <= 1.5 * apart
