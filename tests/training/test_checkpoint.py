"""Checkpoint files: damage detection, the plain-data rule, pruning, stale temp files, and resuming
from a checkpoint in the layout written before provenance was stored."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny_runs import TINY_SERE_MODEL

import selfsup_zoo
from selfsup_zoo.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    remove_stale_temp_files,
    save_checkpoint,
)
from selfsup_zoo.training.engine import train
from selfsup_zoo.training.export import export_checkpoint
from selfsup_zoo.training.provenance import RunProvenance
from selfsup_zoo.training.recipe import load_recipe


def _minimal(step: int) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "recipe": "{}",
        "step": step,
        "method": {"w": torch.ones(2)},
        "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(2)}}, "param_groups": []},
        "complete": True,
    }


def test_truncated_checkpoint_is_detected(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"x": torch.arange(100000)}, good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not a selfsup_zoo training checkpoint"):
        load_checkpoint(good)


def test_save_refuses_what_weights_only_loading_would_reject(tmp_path):
    state = _minimal(1)
    state["rng"] = [{"numpy": np.zeros(3)}]  # a numpy array needs an allow-list entry to load
    path = tmp_path / "c.pt"
    with pytest.raises(TypeError, match=r"state\['rng'\]\[0\]\['numpy'\] is a ndarray"):
        save_checkpoint(state, path)
    assert not path.exists() and not list(tmp_path.iterdir())
    save_checkpoint(_minimal(1), path)
    assert load_checkpoint(path)["step"] == 1


def test_incomplete_checkpoint_is_refused(tmp_path):
    state = _minimal(1)
    del state["optimizer"]
    torch.save(state, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"incomplete \(missing \['optimizer'\]\)"):
        load_checkpoint(tmp_path / "c.pt")


def test_pruning_keeps_the_newest_and_stale_temp_files_go(tmp_path):
    for step in (2, 10, 4, 8):
        save_checkpoint(_minimal(step), checkpoint_path(tmp_path, step))
    (tmp_path / "checkpoints" / "notes.txt").write_text("not a checkpoint")
    stale = tmp_path / "checkpoints" / ".step_000000012.pt.tmp"
    stale.write_bytes(b"cut off")
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step_000000002.pt",
        "step_000000004.pt",
        "step_000000008.pt",
        "step_000000010.pt",
    ]
    prune_checkpoints(tmp_path, keep_last=2)
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(tmp_path)] == [8, 10]
    prune_checkpoints(tmp_path, keep_last=0)  # at least one is always kept
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000000010.pt"]
    remove_stale_temp_files(tmp_path)
    assert not stale.exists() and (tmp_path / "checkpoints" / "notes.txt").exists()


def _tiny_sere(images: Path, cache: Path, *extra: str) -> list[str]:
    return [
        *TINY_SERE_MODEL,
        "engine.global_batch=8",
        "engine.epochs=1",
        "engine.progress=false",
        "engine.export_at_end=false",
        "engine.ckpt_every_steps=1",
        f'data.root="{images}"',
        "data.workers=0",
        f'data.cache_dir="{cache}"',
        *extra,
    ]


def test_checkpoint_without_provenance_resumes_and_exports(tmp_path, images, cache):
    """A checkpoint in the layout written before ``provenance`` was stored (same format string)
    resumes to the same weights as one with it, and still exports."""
    run = tmp_path / "run"
    train(load_recipe("smoke_sere", _tiny_sere(images, cache, "engine.max_steps=1")), run)
    new = load_checkpoint(checkpoint_path(run, 1))
    assert new["provenance"]["recipe_sha256"] and new["provenance"]["torch"] == torch.__version__
    assert new["provenance"]["selfsup_zoo"] == selfsup_zoo.__version__
    assert new["provenance"]["python"] == platform.python_version()
    old = {k: v for k, v in new.items() if k != "provenance"}
    old_run = tmp_path / "old"
    save_checkpoint(old, checkpoint_path(old_run, 1))

    recipe2 = load_recipe("smoke_sere", _tiny_sere(images, cache, "engine.max_steps=2"))
    train(recipe2, run, resume="auto")
    train(recipe2, old_run, resume="auto")
    a, b = load_checkpoint(checkpoint_path(run, 2)), load_checkpoint(checkpoint_path(old_run, 2))
    assert all(torch.equal(a["method"][k], b["method"][k]) for k in a["method"])

    folder = export_checkpoint(checkpoint_path(old_run, 1), tmp_path / "export_old")
    provenance = json.loads((Path(folder.path) / "config.json").read_text())["selfsup_zoo"][
        "provenance"
    ]
    assert provenance["steps"] == 1 and provenance["source_checkpoint"] == "step_000000001.pt"
    assert "torch" not in provenance  # unknown for the old layout: left out, not guessed


def test_provenance_stored_before_versions_were_recorded_reads_back():
    """A checkpoint whose stored provenance predates the selfsup_zoo/python fields reads back with
    those fields empty (an export then leaves them out)."""
    stored = {"git_commit": "abc", "recipe_sha256": "0" * 64, "world_size": 2, "devices": "2 x cpu"}
    stored |= {"torch": "2.0", "timm": "1.0"}
    run = RunProvenance.from_checkpoint({"provenance": stored})
    assert (run.world_size, run.torch, run.selfsup_zoo, run.python) == (2, "2.0", "", "")


class _Foreign:
    """A class outside torch's weights-only allow-list (any foreign pickle holds such objects)."""

    def __init__(self) -> None:
        self.value = 3


def test_a_foreign_pickle_is_refused_as_unsafe_not_as_damage(tmp_path):
    from selfsup_zoo.errors import UnsafeCheckpointError

    foreign = tmp_path / "step_000000010.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "method": _Foreign()}, foreign)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(foreign)
    message = str(caught.value)
    assert isinstance(caught.value, UnsafeCheckpointError)
    assert "unsafe to unpickle" in message and "_Foreign" in message
    assert "corrupt or truncated" not in message and "selfsup_zoo.convert" not in message
    # damage stays damage, also for a file that would have been refused whole
    cut = tmp_path / "cut.pt"
    cut.write_bytes(foreign.read_bytes()[: foreign.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(cut)


def test_an_official_sere_checkpoint_names_the_converter(tmp_path):
    # what train_sere saves: numpy float64 schedule values in the optimizer groups, the args
    import argparse

    official = tmp_path / "checkpoint.pth"
    student = {
        "backbone.cls_token": torch.zeros(1, 1, 8),
        "backbone.pos_embed": torch.zeros(1, 5, 8),
    }
    torch.save(
        {
            "student": student,
            "teacher": dict(student),
            "optimizer": {"state": {}, "param_groups": [{"lr": np.float64(5e-4), "params": [0]}]},
            "epoch": 3,
            "args": argparse.Namespace(arch="vit_small"),
        },
        official,
    )
    with pytest.raises(CheckpointError, match="unsafe to unpickle") as caught:
        load_checkpoint(official)
    assert f"python -m selfsup_zoo.convert sere {official}" in str(caught.value)
    # an official CARE file holds tensors only: it loads, and is named as what it is
    care = tmp_path / "last_epoch_ckpt.pth.tar"
    torch.save(
        {"epoch": 1, "state_dict": {"module.student_encoder.conv1.weight": torch.zeros(1)}}, care
    )
    with pytest.raises(CheckpointError, match="not a selfsup_zoo training checkpoint") as caught:
        load_checkpoint(care)
    assert f"python -m selfsup_zoo.convert care {care}" in str(caught.value)
