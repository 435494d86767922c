"""The linear probe: frozen encoder, folded export, grid of heads, carved split, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.eval_cli import cli_args
from helpers.subprocesses import run_python
from timm.models import VisionTransformer

from selfsup_zoo.evaluation.__main__ import main
from selfsup_zoo.evaluation.linear_probe import LinearProbe, LinearProbeConfig
from selfsup_zoo.evaluation.probe_features import default_variants
from selfsup_zoo.training.checkpoint import list_checkpoints, load_checkpoint
from selfsup_zoo.training.data.holdout import stratified_holdout
from selfsup_zoo.training.optim import apply_schedules, build_optimizer
from selfsup_zoo.training.recipe import OptimConfig


def _probe(**kw) -> LinearProbe:
    cfg = dict(model="resnet10t", random_init=True, num_classes=5)
    cfg.update(kw)
    return LinearProbe(LinearProbeConfig(**cfg))


def test_encoder_is_frozen_in_eval_mode_and_heads_follow_the_paper():
    probe = _probe(lr_scales=[1.0, 2.0])
    probe.train()
    assert not probe.encoder.training and probe.heads.training
    assert not any(p.requires_grad for p in probe.encoder.parameters())
    groups = probe.param_groups()
    assert [g["lr_scale"] for g in groups] == [1.0, 2.0]
    head = probe.heads[probe.head_specs[0].key]
    linear, bn = head[0], head[1]
    assert isinstance(bn, torch.nn.BatchNorm1d) and bn.affine
    assert linear.in_features == 512 and torch.all(linear.bias == 0)
    assert abs(float(linear.weight.detach().std()) - 0.01) < 0.002
    # both lr heads of a variant start from the same weights (a grid head = a single probe)
    other = probe.heads[probe.head_specs[1].key][0].weight
    assert torch.equal(linear.weight, other)


def test_default_vit_feature_fits_the_model_depth():
    def vit(width: int, depth: int) -> VisionTransformer:
        return VisionTransformer(
            img_size=32, patch_size=8, embed_dim=width, depth=depth, num_heads=2, num_classes=0
        )

    assert default_variants(vit(64, 12)) == ["cls4"]  # DINO/iBOT ViT-S: last 4 CLS tokens
    assert default_variants(vit(64, 2)) == ["cls2"]  # the smoke ViT has 2 blocks, not 4
    assert default_variants(vit(768, 2)) == ["cls1+avg"]
    probe = LinearProbe(LinearProbeConfig(model="vit_tiny_patch16_224", random_init=True))
    assert probe.features.dims["cls4"] == 4 * 192


def test_lr_scale_multiplies_the_scheduled_lr():
    probe = _probe(lr_scales=[0.5, 4.0])
    opt = build_optimizer(probe.param_groups(), OptimConfig(weight_decay=0.0), torch.device("cpu"))
    apply_schedules(opt, 0.2, 0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.8]


def test_folded_classifier_equals_the_probe_in_eval_mode():
    probe = _probe()
    key = probe.head_specs[0].key
    bn = probe.heads[key][1]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.3, generator=gen)
        bn.running_var.uniform_(0.2, 3.0, generator=gen)
        bn.weight.normal_(1, 0.2, generator=gen)
        bn.bias.normal_(0, 0.2, generator=gen)
    probe.eval()
    x = torch.randn(6, 3, 32, 32, generator=gen)
    expected = probe.logits(x)[key]
    folded = probe.classifier(key)
    assert isinstance(folded.get_classifier(), torch.nn.Linear)
    with torch.no_grad():
        got = folded(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_a_head_that_does_not_fit_the_features_is_a_clear_error():
    probe = _probe()
    state = probe.state_dict()
    key = probe.head_specs[0].key
    state[f"heads.{key}.0.weight"] = torch.zeros(5, 2048)
    with pytest.raises(ValueError, match="takes 2048-d features.*gives 512-d"):
        probe.load_state_dict(state)


def test_holdout_is_stratified_seeded_and_disjoint():
    targets = np.repeat(np.arange(4), [10, 3, 1, 7])
    kept, held = stratified_holdout(targets, 0.2, seed=3)
    again = stratified_holdout(targets, 0.2, seed=3)
    assert np.array_equal(kept, again[0]) and np.array_equal(held, again[1])
    assert not set(kept) & set(held) and len(kept) + len(held) == len(targets)
    counts = np.bincount(targets[held], minlength=4)
    assert counts.tolist() == [2, 1, 0, 1]  # at least one, never a whole class


def _run(argv: list[str]) -> dict:
    assert main(argv) == 0
    out = argv[argv.index("--out") + 1]
    with open(f"{out}/results.json") as f:
        return json.load(f)


@pytest.fixture
def folders(make_folder):
    train = make_folder("train", {"a": 8, "b": 8, "c": 8}, seed=0)
    val = make_folder("val", {"a": 3, "b": 3, "c": 3}, seed=1)
    return train, val


def _args(tiny_hub, folders, out, *extra: str) -> list[str]:
    train, val = folders
    return cli_args(
        "linear",
        f"local-dir:{tiny_hub}",
        train,
        val,
        out,
        "--epochs",
        "3",
        "--global-batch",
        "6",
        "--eval-epochs",
        "1,2",
        "--no-progress",
        "--no-feature-cache",
        *extra,
    )


def _head(run_dir, key: str) -> dict[str, torch.Tensor]:
    state = load_checkpoint(list_checkpoints(run_dir)[-1])["method"]
    return {k: v for k, v in state.items() if k.startswith(f"heads.{key}.")}


def test_grid_chosen_head_equals_a_probe_trained_alone(tmp_path, tiny_hub, folders):
    grid = _run(
        _args(tiny_hub, folders, tmp_path / "grid", "--val-split", "0.25", "--grid-lrs", "0.1,0.8")
    )
    chosen = grid["details"]["chosen_head"]
    lr = {"pool__lr0": 0.1, "pool__lr1": 0.8}[chosen]
    assert set(grid["metrics"]) >= {"best (paper)", "last", "selected on holdout", "pool__lr0"}
    epochs = [e["epoch"] for e in grid["details"]["evaluations"]]
    assert epochs == [1, 2, 3]  # the recipe's epochs plus the last one
    alone = _run(
        _args(tiny_hub, folders, tmp_path / "alone", "--val-split", "0.25", "--lr", str(lr))
    )
    a = _head(tmp_path / "grid" / "run", chosen)
    b = _head(tmp_path / "alone" / "run", "pool__lr0")
    assert a and len(a) == len(b)
    for (ka, va), vb in zip(sorted(a.items()), [b[k] for k in sorted(b)], strict=True):
        torch.testing.assert_close(va, vb, atol=1e-6, rtol=1e-5, msg=ka)
    assert alone["metrics"]["last"]["top1"] == pytest.approx(
        grid["metrics"][chosen]["top1"], abs=1e-6
    )


def test_export_is_a_hub_folder_that_plain_timm_loads(tmp_path, tiny_hub, folders):
    result = _run(_args(tiny_hub, folders, tmp_path / "out"))
    folder = result["details"]["export_dir"]
    method = dict(result["hyperparameters"]["recipe"]["method"])
    method.pop("kind")
    probe = LinearProbe(LinearProbeConfig(**method))
    probe.load_state_dict(load_checkpoint(list_checkpoints(tmp_path / "out" / "run")[-1])["method"])
    probe.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    expected = probe.logits(x)[result["details"]["chosen_head"]]
    code = (
        "import sys, timm, torch\n"
        "m = timm.create_model('local-dir:' + sys.argv[1], pretrained=True).eval()\n"
        "with torch.no_grad(): y = m(torch.load(sys.argv[2], weights_only=True))\n"
        "torch.save(y, sys.argv[3])\n"
    )
    run_python(
        code, folder, str(tmp_path / "x.pt"), str(tmp_path / "y.pt"), with_zoo=False, cwd=tmp_path
    )
    got = torch.load(tmp_path / "y.pt", weights_only=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    config = json.loads((tmp_path / "out" / "export" / "config.json").read_text())
    assert config["num_classes"] == 3 and config["architecture"] == "resnet10t"


def test_non_finite_loss_is_a_clear_error(tmp_path, tiny_hub, folders, capsys):
    argv = _args(tiny_hub, folders, tmp_path / "nan", "--lr", "inf")
    argv += ["--override", 'method.batchnorm="no"']
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "--lr" in err
    assert not (tmp_path / "nan" / "results.json").exists()


@pytest.mark.parametrize("absurd", ["inf"])  # 1e6, even 1e30, stay finite on 3 epochs here
def test_a_diverged_grid_head_is_dropped_and_the_others_train_on(
    tmp_path, tiny_hub, folders, absurd
):
    argv = _args(tiny_hub, folders, tmp_path / "grid", "--grid-lrs", f"0.1,{absurd}")
    result = _run([*argv, "--override", 'method.batchnorm="no"'])
    assert result["details"]["chosen_head"] == "pool__lr0"
    step = result["details"]["diverged"]["pool__lr1"]
    assert 0 < step < 12 and result["metrics"]["pool__lr1"] == {"diverged_at_step": step}
    assert result["details"]["heads"]["pool__lr1"]["diverged_at_step"] == step
    assert any("pool__lr1 diverged" in note for note in result["notes"])
    # the surviving head is the one a probe trained alone at its lr ends with
    alone = _run(_args(tiny_hub, folders, tmp_path / "alone", "--lr", "0.1", "--override",
                       'method.batchnorm="no"'))  # fmt: skip
    assert alone["metrics"]["last"] == result["metrics"]["last"]
    a = _head(tmp_path / "grid" / "run", "pool__lr0")
    b = _head(tmp_path / "alone" / "run", "pool__lr0")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=key)
    dead = _head(tmp_path / "grid" / "run", "pool__lr1")
    assert all(torch.count_nonzero(v) == 0 for v in dead.values())
