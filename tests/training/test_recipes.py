"""The shipped recipes against the official numbers (docs/methods/care.md §5.1-5.3,
docs/methods/sere.md §5.1-5.3), and recipe validation, overrides and name lookup."""

from __future__ import annotations

import json

import pytest

from selfsup_zoo.training import reproduce
from selfsup_zoo.training.recipe import Recipe, RecipeError, list_recipes, load_recipe

IMAGENET_TRAIN = 1_281_167
CARE = {
    "care_resnet50": "resnet50",
    "care_wide_resnet50_2": "wide_resnet50_2",
    "care_resnet101": "resnet101",
    "care_resnet152": "resnet152",
}
# docs/methods/care.md §5.3
CARE_TOTALS = {100: 125_100, 200: 250_200, 400: 500_400, 800: 1_000_800}
CARE_NAMES = [f"{m}.in1k_ep{e}" for m in CARE for e in CARE_TOTALS]
SERE_NAMES = ["sere_vit_small.in1k_ep100", "sere_vit_base.in1k_ep100"]


def test_one_recipe_per_catalog_checkpoint_plus_smoke():
    names = set(list_recipes())
    assert set(CARE_NAMES + SERE_NAMES) <= names
    assert len(CARE_NAMES) == 16
    assert {"smoke_sere", "smoke_care"} <= names


@pytest.mark.parametrize("name", CARE_NAMES)
def test_care_recipe_numbers(name: str):
    r = load_recipe(name)
    epochs = int(name.rsplit("_ep", 1)[1])
    model = name.split(".")[0]
    assert r.name == name and r.checkpoint == name
    assert r.method.kind == "care" and r.method.config["arch"] == CARE[model]
    e, o = r.engine, r.optim
    assert e.epochs == epochs
    assert e.global_batch == 1024 and e.per_device_batch == 128
    assert e.precision == "fp16"
    spe = IMAGENET_TRAIN // e.global_batch
    assert spe == 1251 and spe * e.epochs == CARE_TOTALS[epochs]
    assert r.data.expected_images == IMAGENET_TRAIN and r.data.root == ""
    assert o.name == "sgd" and o.momentum == 0.9 and o.nesterov is False
    assert o.base_lr == 0.05 and r.peak_lr() == pytest.approx(0.2)
    assert o.lr_schedule == "warmcos" and o.warmup_epochs == 10 and o.warmup_start_lr == 1e-6
    assert o.warmup_epochs * spe == 12_510
    assert o.min_lr == 0.0
    assert o.weight_decay == 1e-4 and o.weight_decay_end is None
    assert o.clip_mode == "none"
    assert r.ema.momentum_base == 0.99 and r.ema.index_offset == 1
    v = r.data.view_args
    assert r.data.views == "care"
    assert v["size"] == 224 and v["scale"] == [0.08, 1.0]
    assert v["jitter"] == [0.4, 0.4, 0.2, 0.1] and v["jitter_p"] == 0.8 and v["grayscale_p"] == 0.2
    assert v["blur_p"] == [1.0, 0.1] and v["solarize_p"] == [0.0, 0.2] and v["sigma"] == [0.1, 2.0]
    assert r.data.mean == [0.485, 0.456, 0.406] and r.data.std == [0.229, 0.224, 0.225]


SERE_EXPECTED = {
    "sere_vit_small.in1k_ep100": dict(
        arch="vit_small_patch16_224",
        base_lr=5e-4,
        peak=2e-3,
        min_lr=1e-6,
        freeze=1,
        norm_last=False,
        temp_epochs=30,
        gscale=[0.4, 1.0],
        lscale=[0.05, 0.4],
    ),
    "sere_vit_base.in1k_ep100": dict(
        arch="vit_base_patch16_224",
        base_lr=7.5e-4,
        peak=3e-3,
        min_lr=2e-6,
        freeze=3,
        norm_last=True,
        temp_epochs=50,
        gscale=[0.32, 1.0],
        lscale=[0.05, 0.32],
    ),
}


@pytest.mark.parametrize("name", SERE_NAMES)
def test_sere_recipe_numbers(name: str):
    x = SERE_EXPECTED[name]
    r = load_recipe(name)
    m, e, o, v = r.method.config, r.engine, r.optim, r.data.view_args
    assert r.checkpoint == name and r.method.kind == "sere" and m["arch"] == x["arch"]
    assert (
        e.epochs == 100
        and e.global_batch == 1024
        and e.per_device_batch == 128
        and e.precision == "fp16"
    )
    assert IMAGENET_TRAIN // e.global_batch * e.epochs == 125_100
    assert o.name == "adamw" and o.betas == [0.9, 0.999] and o.eps == 1e-8
    assert o.base_lr == x["base_lr"] and r.peak_lr() == pytest.approx(x["peak"])
    assert o.lr_schedule == "cosine" and o.warmup_epochs == 10 and o.warmup_start_lr == 0.0
    assert o.min_lr == x["min_lr"]
    assert o.weight_decay == 0.04 and o.weight_decay_end == 0.4
    assert o.clip_grad == 0.3 and o.clip_mode == "per_param"
    assert r.ema.momentum_base == 0.996 and r.ema.index_offset == 0
    assert m["drop_path"] == 0.1 and m["out_dim"] == 8192 and m["patch_out_dim"] == 8192
    assert m["shared_head"] is True and m["shared_head_teacher"] is True
    assert m["norm_last_layer"] is x["norm_last"] and m["freeze_last_layer"] == x["freeze"]
    assert m["warmup_teacher_temp"] == 0.04 and m["teacher_temp"] == 0.07
    assert m["warmup_teacher_patch_temp"] == 0.04 and m["teacher_patch_temp"] == 0.07
    assert m["warmup_teacher_temp_epochs"] == x["temp_epochs"]
    assert m["alpha"] == 0.2 and m["beta"] == 0.5
    assert (
        m["temperature_pixel"] == 0.5
        and m["temperature_channel"] == 0.1
        and m["overlap_size"] == 13
    )
    assert m["lambda1"] == 1.0 and m["lambda2"] == 1.0 and m["student_temp"] == 0.1
    assert (
        m["head_hidden_dim"] == 2048
        and m["head_bottleneck_dim"] == 256
        and m["center_momentum"] == 0.9
    )
    assert (
        m["act_in_head"] == "gelu" and "norm_in_head" not in m
    )  # official None = the config default
    assert r.data.views == "sere" and v["local_crops"] == 10
    assert v["global_size"] == 224 and v["local_size"] == 96 and v["patch_size"] == 16
    assert v["global_scale"] == x["gscale"] and v["local_scale"] == x["lscale"]
    assert (
        v["pred_ratio"] == [0.0, 0.3]
        and v["pred_ratio_var"] == [0.0, 0.2]
        and v["pred_shape"] == "block"
    )
    assert "epochs" not in m  # the engine supplies engine.epochs to the method


def test_recipes_agree_with_catalog():
    catalog = pytest.importorskip("selfsup_zoo.catalog")
    for name in CARE_NAMES + SERE_NAMES:
        entry = catalog.get_entry(name)
        assert entry.recipe == name
        assert load_recipe(name).method.config["arch"] == entry.timm_arch


def test_unknown_key_names_key_and_valid_ones():
    with pytest.raises(RecipeError) as err:
        load_recipe("smoke_sere", ["optim.base_lrr=0.1"])
    msg = str(err.value)
    assert "optim.base_lrr" in msg and "base_lr" in msg and "did you mean" in msg
    with pytest.raises(RecipeError, match="unknown key 'method.alphaa'"):
        load_recipe("smoke_sere", ["method.alphaa=0.3"])
    with pytest.raises(RecipeError, match="unknown top-level key 'enigne'"):
        load_recipe("smoke_sere", ["enigne.epochs=3"])


def test_bad_values_are_rejected():
    with pytest.raises(RecipeError, match="expected an integer"):
        load_recipe("smoke_sere", ["engine.epochs=2.5"])
    with pytest.raises(RecipeError, match="engine.precision"):
        load_recipe("smoke_sere", ["engine.precision=fp8"])
    with pytest.raises(RecipeError, match="per_device_batch"):
        load_recipe("smoke_sere", ["engine.per_device_batch=5"])


def test_overrides_parse_toml_values_and_round_trip_json():
    r = load_recipe(
        "smoke_sere",
        [
            "optim.base_lr=0.1",
            "engine.epochs=2",
            "optim.name=sgd",
            "data.mean=[0.5, 0.5, 0.5]",
            "data.view_args.local_crops=4",
        ],
    )
    assert r.optim.base_lr == 0.1 and r.engine.epochs == 2 and r.optim.name == "sgd"
    assert r.data.mean == [0.5, 0.5, 0.5] and r.data.view_args["local_crops"] == 4
    again = Recipe.from_json(r.to_json())
    assert again == r
    assert json.loads(r.to_json())["method"]["kind"] == "sere"


def test_unknown_name_suggests_close_names():
    with pytest.raises(RecipeError) as err:
        load_recipe("care_resnet50.in1k_ep10")
    msg = str(err.value)
    assert "care_resnet50.in1k_ep100" in msg and "Available:" in msg and "smoke_sere" in msg


def test_cli_dry_run_and_errors(capsys):
    # The command line's main() in this interpreter (fresh-interpreter runs of the command are in
    # test_preemption.py and test_readme_smoke_runs.py).
    argv = ["sere_vit_small.in1k_ep100", "--dry-run", "--set", "engine.per_device_batch=64"]
    assert reproduce.main(argv) == 0
    out = capsys.readouterr().out
    assert "per-device batch      64" in out and "accumulation steps    16" in out
    assert "iterations per epoch  1251" in out and "total iterations      125100" in out
    assert reproduce.main(["care_resnet50.in1k_ep100"]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert reproduce.main(["sere_vit_smal.in1k_ep100", "--dry-run"]) == 2
    assert "sere_vit_small.in1k_ep100" in capsys.readouterr().err


def test_care_recipes_carry_every_official_method_argument():
    m = load_recipe("care_resnet50.in1k_ep100").method.config
    assert (
        m["img_size"] == 224
        and m["lambda_fea"] == 100.0
        and m["con_weight"] == 1.0
        and m["con2_weight"] == 1.0
    )
    assert m["tstream_layers"] == 5 and m["tstream_heads"] == 4 and m["tstream_dim_head"] == 128
    assert m["tstream_dim_out"] == 2048 and m["hidden_dim"] == 4096 and m["out_dim"] == 256
    assert m["sync_tstream_bn"] is False


def test_export_data_cfg_reads_size_and_resampling_from_the_views():
    """A non-catalog export describes the input the run trained on, defaults of the views class
    included (CareViews bilinear, SereViews bicubic) and overrides honoured."""
    from selfsup_zoo.training.export import data_cfg

    care = data_cfg(load_recipe("smoke_care"))
    assert care["input_size"] == (3, 32, 32) and care["interpolation"] == "bilinear"
    sere = data_cfg(load_recipe("smoke_sere"))
    assert sere["input_size"] == (3, 32, 32) and sere["interpolation"] == "bicubic"
    assert (
        data_cfg(load_recipe("smoke_care", ['data.view_args.interpolation="bicubic"']))[
            "interpolation"
        ]
        == "bicubic"
    )
    assert data_cfg(load_recipe("sere_vit_small.in1k_ep100"))["input_size"] == (3, 224, 224)
