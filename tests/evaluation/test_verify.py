"""``reproduce`` ends with the final evaluations of its export: eval/<label>/results.json that
match the protocol's own command line, skipped when already done, exit 5 when one fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers.tiny_runs import TINY_CARE, TINY_SERE

from selfsup_zoo.evaluation.__main__ import main as evaluation_main
from selfsup_zoo.training import reproduce
from selfsup_zoo.training.epoch_hooks import read_evaluations
from selfsup_zoo.weights import file_sha256


def _overrides(
    digits: dict[str, Path], val: Path | None = None, *extra: str, tiny: list[str] = TINY_CARE
) -> list[str]:
    """``tiny`` (a tiny CARE model unless said) for 1 exported epoch on the digit folders, with
    the periodic k-NN and the final k-NN pair."""
    return [
        *tiny,
        "engine.epochs=1",
        "engine.export_at_end=true",
        f'data.root="{digits["train"]}"',
        f'data.cache_dir="{digits["cache"]}"',
        "data.workers=0",
        f'eval.train="{digits["train"]}"',
        f'eval.val="{val or digits["val"]}"',
        "eval.knn_every=1",  # TINY_CARE turns the periodic k-NN off; these tests read it
        'eval.protocols=["knn"]',  # the k-NN pair only (smoke_care also lists linear)
        *extra,
    ]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, digits: dict[str, Path]) -> Path:
    """A tiny smoke_care run (1 epoch of 6 steps) that reproduce exported and evaluated."""
    out = tmp_path_factory.mktemp("runs")
    argv = ["smoke_care", "--output-dir", str(out), "--set", *_overrides(digits)]
    assert reproduce.main(argv) == 0
    return out / "smoke_care"


def _results(run: Path, label: str) -> dict:
    return json.loads((run / "eval" / label / "results.json").read_text())


def test_reproduce_ends_with_knn_and_its_random_init_twin(finished, digits, tmp_path, capsys):
    plan = json.loads((finished / "eval" / "plan.json").read_text())
    assert plan == {
        "protocols": ["knn"],
        "train": str(digits["train"]),
        "val": str(digits["val"]),
        "baseline": True,  # smoke recipes are not in the catalog
    }
    sha = file_sha256(finished / "export" / "model.safetensors")
    trained, untrained = _results(finished, "knn"), _results(finished, "knn-random-init")
    assert trained["export"]["sha256"] == sha and untrained["export"]["sha256"] == sha
    assert trained["random_init"] is False and untrained["random_init"] is True
    # The same number as the protocol's own command line on the exported folder.
    model = f"local-dir:{finished / 'export'}"
    common = ["--train", str(digits["train"]), "--val", str(digits["val"]), "--no-feature-cache"]
    assert evaluation_main(["knn", model, *common, "--out", str(tmp_path / "knn")]) == 0
    alone = json.loads((tmp_path / "knn" / "results.json").read_text())
    assert trained["metrics"]["k=20"]["top1"] == alone["metrics"]["k=20"]["top1"]
    # ... and as the periodic k-NN after the last epoch (the weights that were exported).
    last = read_evaluations(finished)[-1]
    assert last["epoch"] == 1 and last["knn_top1"] == trained["metrics"]["k=20"]["top1"]


def test_resume_skips_finished_evaluations_and_redoes_stale_ones(finished, digits, capsys):
    before = {label: _results(finished, label)["created"] for label in ("knn", "knn-random-init")}
    argv = ["smoke_care", "--output-dir", str(finished.parent), "--resume", "auto"]
    assert reproduce.main([*argv, "--set", *_overrides(digits)]) == 0
    after = {label: _results(finished, label)["created"] for label in before}
    assert after == before  # same export weights: nothing evaluated again
    # A results.json of other weights is evaluated again (here through the verify command).
    stale = _results(finished, "knn")
    stale["export"]["sha256"] = "0" * 64
    (finished / "eval" / "knn" / "results.json").write_text(json.dumps(stale))
    assert evaluation_main(["verify", str(finished)]) == 0
    redone = _results(finished, "knn")
    assert redone["created"] != before["knn"] and redone["metrics"] == stale["metrics"]
    assert _results(finished, "knn-random-init")["created"] == before["knn-random-init"]
    assert "k=20" in capsys.readouterr().out


def test_failed_evaluation_exits_5_and_keeps_the_export(tmp_path, digits, capsys):
    bad_val = tmp_path / "val"
    shutil.copytree(digits["val"], bad_val)
    shutil.copytree(bad_val / "3", bad_val / "not_a_training_class")
    argv = ["smoke_care", "--output-dir", str(tmp_path), "--set"]
    # The periodic k-NN would refuse the folder before training: off here.
    code = reproduce.main([*argv, *_overrides(digits, bad_val, "eval.knn_every=0")])
    err = capsys.readouterr().err
    assert code == 5, err
    assert "final evaluations" in err and "intact" in err and "verify" in err
    run = tmp_path / "smoke_care"
    assert (run / "export" / "model.safetensors").is_file() and (run / "summary.json").is_file()
    assert not (run / "eval" / "knn" / "results.json").exists()


def test_eval_none_and_missing_folders_skip_the_final_evaluations(tmp_path, digits, capsys):
    argv = ["smoke_care", "--output-dir", str(tmp_path), "--eval", "none", "--set"]
    assert reproduce.main([*argv, *_overrides(digits, None, "eval.knn_every=0")]) == 0
    assert not (tmp_path / "smoke_care" / "eval").exists()
    argv = ["smoke_care", "--output-dir", str(tmp_path), "--run-name", "nofolders", "--set"]
    extra = [*_overrides(digits, None, "eval.knn_every=0"), 'eval.train=""', 'eval.val=""']
    assert reproduce.main([*argv, *extra]) == 0
    assert "--eval-train DIR --eval-val DIR" in capsys.readouterr().out


def test_sere_run_ends_with_fine_tuning_and_its_random_init_twin(tmp_path, digits):
    """``--eval all`` on a SERE recipe: k-NN and the headline fine-tuning, each beside its twin,
    and the report's fine-tuning row compares the two."""
    finetune = "finetune=--epochs 1 --warmup-epochs 0 --global-batch 16 --workers 0"
    argv = ["smoke_sere", "--output-dir", str(tmp_path), "--eval", "all", "--eval-option"]
    argv += [finetune, "--set", *_overrides(digits, None, "eval.knn_every=0", tiny=TINY_SERE)]
    assert reproduce.main(argv) == 0
    run = tmp_path / "smoke_sere"
    sha = file_sha256(run / "export" / "model.safetensors")
    labels = ["knn", "knn-random-init", "finetune", "finetune-random-init"]
    assert sorted(p.name for p in (run / "eval").iterdir() if p.is_dir()) == sorted(labels)
    for label in labels:
        record = _results(run, label)
        assert record["export"]["sha256"] == sha
        assert record["random_init"] is label.endswith("random-init")
    report = json.loads((run / "report.json").read_text())
    (row,) = [c for c in report["checks"] if c["protocol"] == "finetune"]
    twin = _results(run, "finetune-random-init")["metrics"]["best"]["top1"]
    assert row["reference_kind"] == "random-init" and row["reference"] == twin
    assert row["status"] in ("pass", "fail")
