"""The README's main job: the shipped smoke recipes, run once each through the command line as the
README runs them, then checked.

``reproduce smoke_care`` (seed 0) learns: it ends with the final evaluations of its export beside
the random-init twin (``eval/knn``, ``eval/linear`` and their ``-random-init`` twins, drawn with
``--seed 0``) and a report whose verdict is pass; the k-NN (k 20, T 0.07) and linear-probe top-1
of the export beat the twin's by a margin. Its hub folder loads in plain timm, and exporting its
last checkpoint again gives the same file.

Measured on the 2-core development machine (data.workers=0, as here; docs/training.md §7.1 has
the per-seed top-1): k-NN SSL - random = 45.3 / 54.1 / 48.0 / 50.6 / 49.5 points for engine.seed
0..4 (SSL 83.1-89.7 %, random 33.6-37.8 %); the recipe's short linear probe 83.1 vs 18.6 % (seed
0) and 81.1 vs 16.1 % (seed 1) on a loaded machine, 78.6 vs 18.6 % on a fresh clone after the
faster blur. The asserted bound, MIN_MARGIN = 25 points for both, is 20 points under the smallest
measured margin: the runs are deterministic on one machine, but CI's CPU may sum in another order,
which moves a 360-image evaluation by a few images (1 image = 0.28 points) and the training by
about what another seed does (the k-NN spread above is 9 points), not by tens of points.

``reproduce smoke_sere`` runs SERE end to end and exports the teacher; its margin over random
init is not asserted: its k-NN does not beat random init (docs/training.md §7.2 gives what was
tried, with the measured figures).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers.plain_timm import plain_timm_forward
from safetensors.torch import load_file

from selfsup_zoo.training.checkpoint import list_checkpoints, load_checkpoint
from selfsup_zoo.weights import file_sha256

MIN_MARGIN = 25.0  # top-1 points, SSL minus random init (k-NN and linear probe)


def _shipped_run(name: str, out: Path, cache: Path, cli, *extra: str) -> Path:
    """Run the shipped recipe ``name`` as the README does (embedded digits, no download)."""
    done = cli.run(
        cli.command(
            name,
            "--output-dir",
            str(out),
            "--set",
            f'data.cache_dir="{cache}"',
            "data.workers=0",
            "engine.progress=false",
            *extra,
        ),
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / name


@pytest.fixture(scope="module")
def smoke_care_run(tmp_path_factory: pytest.TempPathFactory, cache: Path, cli) -> Path:
    """The run folder of the shipped smoke_care recipe (seed 0)."""
    return _shipped_run("smoke_care", tmp_path_factory.mktemp("smoke_care_run"), cache, cli)


def _top1(run: Path, label: str, row: str) -> float:
    metrics = json.loads((run / "eval" / label / "results.json").read_text())["metrics"]
    return float(metrics[row]["top1"])


def test_smoke_care_beats_its_random_init_twin_on_knn_and_linear(smoke_care_run: Path):
    for protocol, row in (("knn", "k=20"), ("linear", "best (paper)")):
        ssl = _top1(smoke_care_run, protocol, row)
        rnd = _top1(smoke_care_run, f"{protocol}-random-init", row)
        assert ssl - rnd >= MIN_MARGIN, (protocol, ssl, rnd)
    report = json.loads((smoke_care_run / "report.json").read_text())
    assert report["verdict"] == "pass"
    assert (smoke_care_run / "plots" / "knn.png").is_file()


def test_smoke_care_export_loads_in_plain_timm_and_equals_the_checkpoint_export(
    smoke_care_run: Path, tmp_path: Path, cli
):
    folder = smoke_care_run / "export"
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in folder.iterdir()}
    assert plain_timm_forward(folder, tmp_path) == ["ResNet", "(2,", "512)"]
    # Not a catalog checkpoint: the card and cfg describe what the run trained on (32 px digits).
    cfg = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["interpolation"] == "bilinear"
    # The weights are the trained student encoder's: exporting the last checkpoint again gives the
    # same file.
    again = cli.run(
        [
            sys.executable,
            "-m",
            "selfsup_zoo.training.export",
            str(smoke_care_run),
            str(tmp_path / "again"),
        ]
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["sha256"] == file_sha256(folder / "model.safetensors")


def test_smoke_sere_trains_and_exports_the_teacher_as_a_hub_folder(
    tmp_path_factory: pytest.TempPathFactory, cache: Path, cli
):
    """The shipped smoke_sere recipe, unchanged (132 steps on the embedded digits), then its hub
    folder loaded by plain timm in a fresh interpreter that never imports selfsup_zoo.

    The total loss falls (18.9 -> 16.8, mean of the first vs last 20 steps; seeds 1 and 2: 18.4 ->
    16.5, 18.1 -> 16.3), mostly through the masked-patch (MIM) term (3.73 -> 2.64). The CLS term
    barely moves (6.33 -> 6.14) and the features do not beat a random init on k-NN: the limitation
    stated in docs/training.md §7.2, which also says why the recipe's centre momentum is 0.5.
    """
    out = tmp_path_factory.mktemp("smoke_sere_run")
    run = _shipped_run("smoke_sere", out, cache, cli, "engine.log_every=1")
    rows = [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 133))
    for r in rows:
        assert all(
            r[k] == r[k] and abs(r[k]) < 1e3 for k in ("loss", "cls", "patch", "spatial", "channel")
        )

    def mean(key, part):
        return sum(r[key] for r in part) / len(part)

    first, last = mean("loss", rows[:20]), mean("loss", rows[-20:])
    assert last < 0.95 * first, ("total", first, last)
    first, last = mean("patch", rows[:20]), mean("patch", rows[-20:])
    assert last < 0.85 * first, ("patch", first, last)

    folder = run / "export"
    assert plain_timm_forward(folder, out) == ["VisionTransformer", "(2,", "48)"]
    # The exported weights are the teacher's backbone of the last checkpoint, key for key.
    weights = load_file(str(folder / "model.safetensors"))
    state = load_checkpoint(list_checkpoints(run)[-1])
    teacher = {
        k[len("teacher.backbone.") :]: v
        for k, v in state["method"].items()
        if k.startswith("teacher.backbone.")
    }
    assert weights.keys() == teacher.keys() and all(
        torch.equal(weights[k], teacher[k]) for k in weights
    )
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == "vit_tiny_patch16_224" and cfg["pretrained_cfg"][
        "input_size"
    ] == [3, 32, 32]
    # The run ends with its report (the verdict is not asserted, see the module docstring).
    assert json.loads((run / "report.json").read_text())["verdict"] in ("pass", "fail")
