"""Weighted k-NN: hand-checked voting, and a real run on the embedded digits images."""

import math
import shutil

import pytest
import timm
import torch
import torch.nn.functional as F

from selfsup_zoo.evaluation.knn import knn_evaluate, knn_predict
from selfsup_zoo.training.data import materialize_digits


def test_votes_are_weighted_by_exp_similarity_over_temperature():
    train = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.0]])
    scores = knn_predict(train, labels, test, k=2, temperature=0.5, num_classes=2)
    # Two nearest: sample 0 (sim 1.0, class 0) and sample 1 (sim 0.8, class 1).
    assert torch.allclose(scores, torch.tensor([[math.exp(2.0), math.exp(1.6)]]))
    # With k=3 the third neighbour (sim 0, class 1) adds exp(0) = 1 to class 1.
    scores3 = knn_predict(train, labels, test, k=3, temperature=0.5, num_classes=2)
    assert torch.allclose(scores3, torch.tensor([[math.exp(2.0), math.exp(1.6) + 1.0]]))


def test_k_larger_than_the_training_set_is_clamped():
    train = F.normalize(torch.randn(4, 8), dim=1)
    scores = knn_predict(train, torch.tensor([0, 1, 2, 3]), train, k=50, num_classes=4)
    assert scores.argmax(1).tolist() == [0, 1, 2, 3]


def test_knn_on_digits_beats_chance_with_a_random_backbone(tmp_path):
    root = materialize_digits(tmp_path / "digits", size=32)
    # Random-init features of a real (small) timm ResNet already separate digits far above
    # chance (10 %): the protocol and the image pipeline work end to end.
    torch.manual_seed(0)  # before the model: its random weights are what is measured
    result = knn_evaluate(_tiny_model(), root / "train", root / "val", k=10)
    assert result["num_train"] == 1437 and result["num_val"] == 360
    assert result["feature_dim"] == 512  # resnet10t pools 512 channels
    assert 50.0 < result["top1"] <= 100.0  # 87.5 % measured; chance is 10 %
    assert result["top5"] >= result["top1"]


def _tiny_model():
    return timm.create_model(
        "resnet10t",
        num_classes=0,
        pretrained_cfg_overlay=dict(
            input_size=(3, 32, 32), crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
        ),
    )


def test_val_folder_is_labelled_by_the_training_class_names(tmp_path):
    """A val split lacking a class keeps the training labels: its images, also in train, are each
    their own nearest neighbour (k=1), so top-1 is 100 %. Labelling val by its own folder order
    would shift classes 1, 2 to 0, 1 and score 0 %."""
    digits = materialize_digits(tmp_path / "digits", size=32) / "train"
    for split, classes in (("train", "012"), ("val", "12")):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            for f in sorted((digits / c).glob("*.png"))[:4]:
                shutil.copyfile(f, tmp_path / split / c / f.name)
    torch.manual_seed(0)
    result = knn_evaluate(_tiny_model(), tmp_path / "train", tmp_path / "val", k=1)
    assert result["num_val"] == 8 and result["top1"] == 100.0

    (tmp_path / "val" / "7").mkdir()
    shutil.copyfile(next((digits / "7").glob("*.png")), tmp_path / "val" / "7" / "x.png")
    with pytest.raises(
        ValueError, match=r"class folders \['7'\] have no counterpart among the training"
    ):
        knn_evaluate(_tiny_model(), tmp_path / "train", tmp_path / "val", k=1)


def test_cli_runs_as_a_module_without_double_import_warning():
    """`python -m selfsup_zoo.evaluation.knn` (the documented command): the package must not import
    the module first, or runpy warns that it was found in sys.modules before execution."""
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "error::RuntimeWarning",
            "-m",
            "selfsup_zoo.evaluation.knn",
            "--help",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--train" in proc.stdout and "RuntimeWarning" not in proc.stderr


def test_cli_random_init_baseline_is_repeatable_and_seeded(tmp_path, capsys):
    """Two --random-init runs with the same --seed give the same figures; another seed builds other
    weights (so the baseline quoted in the README can be rerun exactly)."""
    import json

    from selfsup_zoo.evaluation.knn import main

    full = materialize_digits(tmp_path / "digits", size=32)
    root = tmp_path / "small"  # 40 + 20 real digits: resnet10t runs at its own 176-px size
    for split, stride, n in (("train", 30, 40), ("val", 15, 20)):
        for f in sorted((full / split).rglob("*.png"))[::stride][:n]:
            (root / split / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, root / split / f.parent.name / f.name)
    common = [
        "resnet10t",
        "--train",
        str(root / "train"),
        "--val",
        str(root / "val"),
        "--random-init",
        "--k",
        "5",
    ]
    results = []
    for seed in ("0", "0", "1"):
        assert main([*common, "--seed", seed]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["top1"] == results[1]["top1"] and results[0]["top5"] == results[1]["top5"]
    assert results[0]["num_train"] == 40 and results[0]["num_val"] == 20
    assert (results[2]["top1"], results[2]["top5"]) != (results[0]["top1"], results[0]["top5"])
