"""The reproduction report of a real tiny CARE run with real k-NN evaluations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers.tiny_runs import TINY_CARE
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image
from torchvision.io import write_png

from selfsup_zoo.cards.measured import MEASURED_SOURCE
from selfsup_zoo.evaluation.__main__ import main as evaluation_main
from selfsup_zoo.evaluation.report import (
    REPORT_JSON,
    REPORT_MD,
    ReportError,
    build_report,
    write_report,
)
from selfsup_zoo.training.engine import train
from selfsup_zoo.training.recipe import load_recipe


def _folder(root: Path, per_class: int, seed: int) -> Path:
    gen = torch.Generator().manual_seed(seed)
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            img = (torch.rand(3, 32, 32, generator=gen) * 100 + 100 * c).to(torch.uint8)
            write_png(img, str(root / f"class{c}" / f"{i:02d}.png"))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny smoke_care run (3 steps, exported), its k-NN and its random-init twin's
    under eval/, and a periodic k-NN record in the contract's format."""
    base = tmp_path_factory.mktemp("report_run")
    train_dir = _folder(base / "data" / "train", 12, seed=0)
    val_dir = _folder(base / "data" / "val", 6, seed=1)
    recipe = load_recipe(
        "smoke_care",
        [
            *TINY_CARE,
            f'data.root="{train_dir}"',
            "data.workers=0",
            f'data.cache_dir="{base / "cache"}"',
            "engine.epochs=1",
            "engine.export_at_end=true",
        ],
    )
    run = base / "runs" / "smoke_care"
    train(recipe, run)
    for flags, label in (([], "knn"), (["--random-init"], "knn-random-init")):
        argv = ["knn", f"local-dir:{run / 'export'}", *flags, "--train", str(train_dir)]
        argv += ["--val", str(val_dir), "--k", "20", "--out", str(run / "eval" / label)]
        argv += ["--no-feature-cache", "--workers", "0"]
        assert evaluation_main(argv) == 0
    records = [
        {"epoch": e, "step": 3 * e, "knn_top1": 50.0 + 10 * e, "knn_top5": 100.0, "knn_k": 20}
        for e in (1, 2)
    ]
    for r in records:
        r["knn_images"] = {"train": 24, "val": 12}
    (run / "evaluations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_report(run)
    return run


def test_report_json_has_every_field(run_dir: Path) -> None:
    report = json.loads((run_dir / REPORT_JSON).read_text())
    assert set(report) == {
        "run_dir", "verdict", "checks", "measurements", "periodic_knn", "plan", "provenance",
        "plots", "created",
    }  # fmt: skip
    assert report["verdict"] in ("pass", "fail")
    (check,) = report["checks"]
    assert check["protocol"] == "knn" and check["reference_kind"] == "random-init"
    assert check["tolerance"] == 5.0 and check["source"] == "knn-random-init"
    assert check["difference"] == pytest.approx(check["measured"] - check["reference"])
    assert {m["label"] for m in report["measurements"]} == {"knn", "knn-random-init"}
    assert all(m["row"] == "k=20" and m["top1"] is not None for m in report["measurements"])
    assert [r["epoch"] for r in report["periodic_knn"]] == [1, 2]
    assert report["plan"]["protocols"] == ["knn"] and report["plan"]["baseline"] is True
    prov = report["provenance"]
    assert prov["recipe"] == "smoke_care" and len(prov["recipe_sha256"]) == 64
    assert len(prov["data_fingerprint"]) == 64 and prov["data_images"] == 24
    assert prov["world_size"] == 1 and prov["devices"] == "1 x cpu"
    assert prov["steps"] == prov["total_steps"] == 3
    assert prov["wall_time_s"] > 0 and prov["device_hours"] > 0
    assert set(prov["versions"]) == {"torch", "timm"} and len(prov["weights_sha256"]) == 64
    text = (run_dir / REPORT_MD).read_text()
    assert "| k-NN | top1 |" in text and "## Provenance" in text and prov["recipe_sha256"] in text


def test_plots_are_real_pngs(run_dir: Path) -> None:
    plots = json.loads((run_dir / REPORT_JSON).read_text())["plots"]
    assert plots == ["plots/losses.png", "plots/schedules.png", "plots/knn.png"]
    for rel in plots:
        path = run_dir / rel
        assert path.stat().st_size > 0
        with Image.open(path) as img:
            assert img.format == "PNG"
            lo, hi = img.convert("L").getextrema()
            assert img.width > 200 and img.height > 200 and hi - lo > 100, rel  # not blank


def test_cli_rebuilds_the_same_report(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = json.loads((run_dir / REPORT_JSON).read_text())
    assert evaluation_main(["report", str(run_dir / "export")]) == 0  # the hub folder works too
    after = json.loads((run_dir / REPORT_JSON).read_text())
    assert before.pop("created") != after.pop("created")
    assert before == after
    assert "report:" in capsys.readouterr().out
    built = build_report(run_dir).to_dict()  # reads, writes nothing (so no plots listed)
    assert built.pop("plots") == [] and built.pop("created")
    assert built == {k: v for k, v in after.items() if k != "plots"}


def test_card_validates_with_measured_model_index(run_dir: Path) -> None:
    text = (run_dir / "export" / "README.md").read_text()
    card = ModelCard(text)
    assert card.data.to_dict()["library_name"] == "timm"
    assert "## Results measured on these weights" in text and "## Provenance" in text
    assert "## Usage" in text and "data_fingerprint" in text  # the rest of the card is kept
    meta = metadata_load(run_dir / "export" / "README.md")
    assert meta is not None
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "smoke_care"
    top1, top5 = results  # one EvalResult per metric
    for r in results:
        assert r.source_name == MEASURED_SOURCE and r.dataset_split == "validation"
        assert r.dataset_name == "data/val" and len(r.dataset_args["fingerprint"]) == 64
        assert r.task_type == "image-classification"
    measured = json.loads((run_dir / REPORT_JSON).read_text())["measurements"][0]
    assert top1.metric_type == "accuracy" and top1.metric_value == pytest.approx(measured["top1"])
    assert top5.metric_type == "top_5_accuracy"


def test_clear_errors(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ReportError, match="not a run folder"):
        write_report(tmp_path)
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    (copy / "log.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ReportError, match="line 2 is not JSON"):
        write_report(copy)
    shutil.rmtree(copy / "export")
    assert evaluation_main(["report", str(copy)]) == 2
    assert "no exported hub folder" in capsys.readouterr().err
