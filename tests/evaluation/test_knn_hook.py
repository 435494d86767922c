"""The periodic k-NN during pre-training: the ``[eval]`` recipe table, the hook's records, the
unchanged training, and the same figures on two processes as on one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.forked_jobs import run_job
from helpers.tiny_runs import TINY_CARE, tensors_equal

from selfsup_zoo.evaluation.knn_hook import PeriodicKnn, export_transform
from selfsup_zoo.evaluation.verify import parse_eval_options
from selfsup_zoo.training.checkpoint import load_checkpoint
from selfsup_zoo.training.engine import train
from selfsup_zoo.training.epoch_hooks import hook_epochs, read_evaluations
from selfsup_zoo.training.eval_config import resolve_protocols
from selfsup_zoo.training.recipe import RecipeError, load_recipe
from selfsup_zoo.training.state import build_recipe_method


def tiny_care(digits: dict[str, Path], *extra: str) -> list[str]:
    """smoke_care shrunk to 2 epochs of 6 steps, the periodic k-NN on the small folders."""
    return [
        *TINY_CARE,
        "engine.epochs=2",
        f'data.root="{digits["train"]}"',
        f'data.cache_dir="{digits["cache"]}"',
        "data.workers=0",
        f'eval.train="{digits["train"]}"',
        f'eval.val="{digits["val"]}"',
        *extra,
    ]


def test_eval_table_defaults_overrides_and_checks():
    smoke = load_recipe("smoke_sere")
    assert smoke.eval.train == "embedded:digits@32/train" and smoke.eval.knn_every == 1
    catalog = load_recipe("care_resnet50.in1k_ep100")
    assert (catalog.eval.train, catalog.eval.val, catalog.eval.knn_every) == ("", "", 0)
    assert catalog.eval.knn_k == 20 and catalog.eval.protocols == ["knn"]
    r = load_recipe("smoke_care", ["eval.knn_every=2", "engine.epochs=5"])
    assert hook_epochs(r) == {2, 4, 5}  # every 2nd and the last
    assert json.loads(r.to_json())["eval"]["knn_every"] == 2
    with pytest.raises(RecipeError, match="eval.knn_every"):
        load_recipe("smoke_care", ["eval.knn_every=-1"])
    with pytest.raises(RecipeError, match="eval.protocols"):
        load_recipe("smoke_care", ['eval.protocols=["knn", "svm"]'])
    with pytest.raises(RecipeError, match="did you mean 'knn_k'"):
        load_recipe("smoke_care", ["eval.knn_kk=3"])
    r = load_recipe("smoke_care", ['eval.options={linear="--epochs 3", knn="--k 5"}'])
    assert parse_eval_options([*r.eval.option_items(), "linear=--epochs 4"]) == {
        "linear": ["--epochs", "3", "--epochs", "4"],  # the command line's come last and win
        "knn": ["--k", "5"],
    }
    with pytest.raises(RecipeError, match="eval.options"):
        load_recipe("smoke_care", ['eval.options={svm="--c 1"}'])
    # eval_epochs of the engine jobs are unchanged by the table (knn_every 0 there).
    r = load_recipe("smoke_care", ["engine.eval_epochs=[1, 3]", "eval.knn_every=0"])
    assert hook_epochs(r) == {1, 3}


def test_protocols_resolution():
    assert resolve_protocols(["knn"], "care") == ["knn"]
    assert resolve_protocols(["all"], "care") == ["knn", "linear"]
    assert resolve_protocols(["all"], "sere") == ["knn", "finetune"]
    assert resolve_protocols(["linear,finetune"], "sere") == ["knn", "linear", "finetune"]
    assert resolve_protocols(["none"], "care") == []
    with pytest.raises(ValueError, match="svm"):
        resolve_protocols(["svm"], "care")


def test_export_transform_is_the_hub_folders():
    smoke = export_transform(load_recipe("smoke_care"))
    assert (smoke.size, smoke.crop_pct) == (32, 0.875)
    catalog = export_transform(load_recipe("care_resnet50.in1k_ep100"))
    assert (catalog.size, catalog.interpolation) == (224, "bilinear")


def test_periodic_knn_records_epochs_and_leaves_training_unchanged(tmp_path, digits):
    with_hook = load_recipe("smoke_care", tiny_care(digits, "eval.knn_every=1"))
    res = train(with_hook, tmp_path / "hook", epoch_hook=PeriodicKnn(with_hook))
    records = read_evaluations(tmp_path / "hook")
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 6), (2, 12)]
    for r in records:
        assert set(r) == {"epoch", "step", "knn_top1", "knn_top5", "knn_k", "knn_images"}
        assert r["knn_k"] == 20 and r["knn_images"] == {"train": 48, "val": 30}
        assert 0.0 <= r["knn_top1"] <= r["knn_top5"] <= 100.0
    plain = load_recipe("smoke_care", tiny_care(digits, "eval.knn_every=0"))
    ref = train(plain, tmp_path / "plain")
    assert not (tmp_path / "plain" / "evaluations.jsonl").exists()
    a, b = load_checkpoint(res.last_checkpoint), load_checkpoint(ref.last_checkpoint)
    for key in ("method", "optimizer", "rng", "step"):
        assert tensors_equal(a[key], b[key], key) == []


def test_two_processes_give_the_same_periodic_knn(tmp_path, digits):
    """A forked two-process gloo job of ``reproduce`` records what one process measures on the same
    weights (its epoch-1 checkpoint: BatchNorm makes the weights depend on the world size)."""
    extra = tiny_care(digits, "eval.knn_every=1", "engine.max_steps=6")
    argv = ["smoke_care", "--output-dir", str(tmp_path), "--eval", "none", "--set", *extra]
    run_job(argv, tmp_path / "logs", timeout=240)
    run = tmp_path / "smoke_care"
    two = read_evaluations(run)
    assert [(r["epoch"], r["step"]) for r in two] == [(1, 6)]
    recipe = load_recipe("smoke_care", extra)
    method = build_recipe_method(recipe, accum=1)
    method.load_state_dict(load_checkpoint(run / "checkpoints" / "step_000000006.pt")["method"])
    method.eval()
    with torch.no_grad():
        one = PeriodicKnn(recipe)(method, 1)
    for key in ("knn_top1", "knn_top5", "knn_k", "knn_images"):
        assert two[0][key] == one[key], key
