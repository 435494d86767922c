"""``python -m selfsup_zoo.evaluation``: features equal the model's own forward, the feature cache,
bad input, the CLI end to end on the embedded digits, and torchrun (2 processes) = 1 process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file
from torchvision.io import decode_image

from selfsup_zoo.evaluation.__main__ import main
from selfsup_zoo.evaluation.extract import EvalTransform
from selfsup_zoo.training.data import EvalView, normalize_uint8

ROOT = Path(__file__).resolve().parents[2]


def _run(*args):
    return main([str(a) for a in args])


def test_features_equal_the_models_own_forward(tiny_hub, make_folder, tmp_path):
    folder = make_folder("imgs", {"a": 3, "b": 2})
    out = tmp_path / "out"
    assert _run("features", f"local-dir:{tiny_hub}", "--data", folder, "--out", out) == 0
    saved = load_file(str(out / "data.safetensors"))
    files = json.loads((out / "data.files.json").read_text())
    assert files["classes"] == ["a", "b"] and [y for _, y in files["files"]] == [0, 0, 0, 1, 1]
    assert saved["labels"].tolist() == [0, 0, 0, 1, 1]
    model = timm.create_model(f"local-dir:{tiny_hub}", pretrained=True, num_classes=0).eval()
    cfg = EvalTransform.from_model(model)
    view = EvalView(cfg.size, cfg.crop_pct, cfg.interpolation)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (cfg.mean, cfg.std))
    with torch.no_grad():
        for row, (rel, _) in enumerate(files["files"]):
            image = view(decode_image(str(folder / rel)))["image"]
            want = model(normalize_uint8(image[None], mean, std))[0]
            torch.testing.assert_close(saved["features"][row], want, rtol=1e-4, atol=1e-5)
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "features" and results["metrics"]["data"]["dim"] == 512

    tokens_out = tmp_path / "tokens"
    assert _run("features", f"local-dir:{tiny_hub}", "--data", folder, "--out", tokens_out,
                "--tokens") == 0  # fmt: skip
    tokens = load_file(str(tokens_out / "data.safetensors"))["features"]
    assert tokens.shape == (5, 1, 512)  # resnet10t at 32 px: a 1x1 feature map of 512 channels


def test_second_knn_run_reads_the_cache_and_a_changed_folder_misses(
    tiny_hub, make_folder, tmp_path, private_cache_root
):
    train = make_folder("train", {"a": 4, "b": 4, "c": 4})
    val = make_folder("val", {"a": 2, "b": 2}, seed=1)
    common = ["knn", f"local-dir:{tiny_hub}", "--train", train, "--val", val, "--k", 1, 3, 50]
    out = [tmp_path / f"run{i}" for i in range(3)]
    assert _run(*common, "--out", out[0]) == 0
    assert _run(*common, "--out", out[1], "--k", 2) == 0  # another k: same features
    first, second = (json.loads((o / "results.json").read_text()) for o in out[:2])
    assert first["feature_cache"] == {"train": "miss", "val": "miss"}
    assert second["feature_cache"] == {"train": "hit", "val": "hit"}
    assert len(list((private_cache_root / "features").glob("*.safetensors"))) == 2
    assert first["metrics"]["k=50"] == first["metrics"]["k=3"] or first["notes"]
    assert any("k=50 exceeds the 12 training features" in n for n in first["notes"])
    assert first["hyperparameters"]["temperature"] == 0.07
    assert set(first["versions"]) >= {"torch", "timm", "selfsup_zoo"}
    assert first["data"]["train"]["fingerprint"] and first["wall_time_s"] > 0

    make_folder("train", {"d": 1}, seed=2)  # one more class folder: train fingerprint changes
    assert _run(*common, "--out", out[2]) == 0
    third = json.loads((out[2] / "results.json").read_text())
    assert third["feature_cache"] == {"train": "miss", "val": "hit"}


def test_bad_input_is_one_clear_error_and_nothing_is_written(
    tiny_hub, make_folder, tmp_path, capsys
):
    train = make_folder("train", {"a": 2, "b": 2})
    val = make_folder("val", {"a": 1, "z": 1})
    out = tmp_path / "out"
    cases = [
        (["knn", "resnet10x", "--train", train, "--val", train], "Did you mean 'resnet10t'"),
        (["knn", "resnet10t", "--train", tmp_path / "nope", "--val", train], "--train: data root"),
        (["knn", f"local-dir:{tiny_hub}", "--train", train, "--val", val], "class folders ['z']"),
        (["knn", f"local-dir:{tmp_path}", "--train", train, "--val", train], "not a hub folder"),
        (["linear-probe", "resnet10t"], "unknown protocol"),
    ]
    for argv, message in cases:
        assert _run(*argv, "--out", out) == 2
        err = capsys.readouterr().err
        assert message in err, err
    (train / "empty").mkdir()
    assert _run("knn", f"local-dir:{tiny_hub}", "--train", train, "--val", train, "--out", out) == 2
    assert "class folders ['empty'] hold no images" in capsys.readouterr().err
    (train / "empty").rmdir()
    (train / "a" / "broken.png").write_bytes(b"not a png")
    assert _run("knn", f"local-dir:{tiny_hub}", "--train", train, "--val", train, "--out", out,
                "--strict") == 2  # fmt: skip
    assert "cannot read image" in capsys.readouterr().err
    assert not out.exists()
    # without --strict the unreadable file is counted and left out
    assert _run("knn", f"local-dir:{tiny_hub}", "--train", train, "--val", train, "--out", out) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["details"]["num_train"] == 4 and results["data"]["train"]["images"] == 5
    assert any("1 unreadable images skipped" in n for n in results["notes"])


def test_cli_on_embedded_digits_writes_results_json(tiny_hub, tmp_path, capsys):
    out = tmp_path / "knn"
    data = tmp_path / "data"
    code = _run("knn", f"local-dir:{tiny_hub}", "--random-init", "--train",
                "embedded:digits@32/train", "--val", "embedded:digits@32/val", "--cache-dir",
                data, "--out", out, "--shots", 5, "--draws", 2)  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    assert "k=200" in table and "top5" in table and "results.json" in table
    results = json.loads((out / "results.json").read_text())
    assert results["details"]["num_train"] == 1437 and results["details"]["num_val"] == 360
    for k in (10, 20, 100, 200):
        assert 50.0 < results["metrics"][f"k={k}"]["top1"] <= 100.0  # chance is 10 %
    few = results["metrics"]["5-shot k=10"]
    assert 10.0 < few["top1"] <= 100.0 and few["top1_std"] >= 0
    assert results["hyperparameters"]["k"] == [10, 20, 100, 200]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_extract_the_same_features_as_one(tiny_hub, make_folder, tmp_path):
    folder = make_folder("imgs", {"a": 5, "b": 4, "c": 2})  # 11 images, batches of 2: uneven
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    outputs = {}
    for procs in (1, 2):
        out = tmp_path / f"out{procs}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "selfsup_zoo.evaluation", "features", f"local-dir:{tiny_hub}",
               "--data", str(folder), "--out", str(out), "--batch-size", "2",
               "--no-feature-cache", "--device", "cpu"]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[procs] = load_file(str(out / "data.safetensors"))
        assert json.loads((out / "results.json").read_text())["run"]["world_size"] == procs
    assert torch.equal(outputs[1]["labels"], outputs[2]["labels"])
    torch.testing.assert_close(outputs[1]["features"], outputs[2]["features"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("argv", [["--help"], []])
def test_top_level_usage_lists_the_protocols(argv, capsys):
    assert main(argv) == (0 if argv else 2)
    assert "knn" in capsys.readouterr().out
