"""Fine-tuning (SERE / MAE protocol) on the engine: timm's parts, layer decay, exact resume."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
from helpers.eval_cli import cli_args, kill_when_written, run_eval
from helpers.subprocesses import run_python
from timm.data import Mixup

from selfsup_zoo.evaluation.finetune_method import FineTune, FineTuneConfig
from selfsup_zoo.training.checkpoint import list_checkpoints, load_checkpoint
from selfsup_zoo.training.data.timm_view import TimmTrainView
from selfsup_zoo.training.optim import apply_schedules, build_optimizer
from selfsup_zoo.training.recipe import OptimConfig, load_recipe

ROOT = Path(__file__).resolve().parents[2]


def _mae_layer_id(name: str, depth: int) -> int:
    """MAE's ``get_layer_id_for_vit``: embeddings 0, block i -> i + 1, the rest depth + 1."""
    if name.startswith(("cls_token", "pos_embed", "patch_embed")):
        return 0
    match = re.match(r"blocks\.(\d+)\.", name)
    return int(match.group(1)) + 1 if match else depth + 1


def test_per_group_lrs_equal_the_layer_decay_formula(vit_hub):
    decay = 0.65
    method = FineTune(
        FineTuneConfig(model=f"local-dir:{vit_hub}", num_classes=7, layer_decay=decay)
    )
    depth = len(method.model.blocks)
    opt = build_optimizer(
        method.param_groups(), OptimConfig(name="adamw", weight_decay=0.05), torch.device("cpu")
    )
    apply_schedules(opt, 1e-3, 0.05)
    names = {id(p): n for n, p in method.model.named_parameters()}
    checked = 0
    for group in opt.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            expected = 1e-3 * decay ** (depth + 1 - _mae_layer_id(name, depth))
            assert group["lr"] == pytest.approx(expected, rel=1e-12), name
            no_decay = p.ndim <= 1 or name in ("pos_embed", "cls_token")
            assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
            checked += 1
    assert checked == len(names)


def test_built_from_timms_parts(vit_hub):
    method = FineTune(FineTuneConfig(model=f"local-dir:{vit_hub}", num_classes=7, drop_path=0.1))
    assert isinstance(method.mixup, Mixup)
    assert method.mixup.mixup_alpha == 0.8 and method.mixup.cutmix_alpha == 1.0
    assert method.model.global_pool == "avg" and method.model.blocks[-1].drop_path1.drop_prob > 0
    base = load_recipe(str(ROOT / "selfsup_zoo/evaluation/recipes/finetune_vit_base.toml"))
    small = load_recipe(str(ROOT / "selfsup_zoo/evaluation/recipes/finetune_vit_small.toml"))
    assert base.method.config["layer_decay"] == 0.65 and base.engine.epochs == 100
    assert small.method.config["layer_decay"] == 0.75 and small.engine.epochs == 200
    assert base.optim.name == "adamw" and base.engine.global_batch == 1024
    assert base.data.view_args["auto_augment"] == "rand-m9-mstd0.5-inc1"
    view = TimmTrainView(32, re_prob=0.25)
    img = (torch.rand(3, 40, 48) * 255).to(torch.uint8)
    state = random.getstate()
    torch.manual_seed(3)
    a = view(img, random.Random(5), 0)["image"]
    torch.manual_seed(3)
    b = view(img, random.Random(5), 0)["image"]
    assert random.getstate() == state  # the caller's Python RNG is left alone
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32 and torch.equal(a, b)


def _args(hub: Path, train: Path, val: Path, out: Path, *extra: str) -> list[str]:
    return cli_args(
        "finetune",
        f"local-dir:{hub}",
        train,
        val,
        out,
        "--epochs",
        "2",
        "--global-batch",
        "4",
        "--warmup-epochs",
        "1",
        "--eval-epochs",
        "1",
        "--ckpt-every",
        "2",
        "--override",
        "engine.keep_last=50",
        "--no-progress",
        *extra,
    )


def test_sigkill_then_resume_is_bit_identical_and_the_export_loads_in_plain_timm(
    tmp_path, vit_hub, make_folder
):
    train = make_folder("train", {"a": 6, "b": 6}, seed=0, sizes=(40, 48))
    val = make_folder("val", {"a": 2, "b": 2}, seed=1)
    run_eval(_args(vit_hub, train, val, tmp_path / "ref"), tmp_path)

    out = tmp_path / "killed"
    target = out / "run" / "checkpoints" / "step_000000002.pt"  # mid epoch 1 (3 steps/epoch)
    kill_when_written(_args(vit_hub, train, val, out), target, tmp_path)
    assert load_checkpoint(list_checkpoints(out / "run")[-1])["step"] < 6, "killed before the end"

    run_eval(_args(vit_hub, train, val, out, "--resume", "auto"), tmp_path)
    a = load_checkpoint(tmp_path / "ref" / "run" / "checkpoints" / "step_000000006.pt")
    b = load_checkpoint(out / "run" / "checkpoints" / "step_000000006.pt")
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), key
    ra = json.loads((tmp_path / "ref" / "results.json").read_text())
    rb = json.loads((out / "results.json").read_text())
    assert ra["details"]["evaluations"] == rb["details"]["evaluations"]

    # the fine-tuned classifier as a hub folder: plain timm, C classes, the same logits
    method = FineTune(FineTuneConfig(**_method_config(ra)))
    method.load_state_dict(a["method"])
    method.eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, timm, torch\n"
        "m = timm.create_model('local-dir:' + sys.argv[1], pretrained=True).eval()\n"
        "assert m.num_classes == 2, m.num_classes\n"
        "with torch.no_grad(): y = m(torch.load(sys.argv[2], weights_only=True))\n"
        "torch.save(y, sys.argv[3])\n"
    )
    folder = ra["details"]["export_dir"]
    run_python(code, folder, str(tmp_path / "x.pt"), str(tmp_path / "y.pt"), with_zoo=False,
               cwd=tmp_path)  # fmt: skip
    expected = method.logits(x)["model"]
    torch.testing.assert_close(torch.load(tmp_path / "y.pt", weights_only=True), expected,
                               atol=1e-5, rtol=0)  # fmt: skip


def _method_config(result: dict) -> dict:
    method = dict(result["hyperparameters"]["recipe"]["method"])
    method.pop("kind")
    return method
