"""The README's main job: the embedded smoke run of CARE learns. ``reproduce smoke_care`` (the
shipped recipe, seed 0) ends with the final evaluations of its export beside the random-init twin
(``eval/knn``, ``eval/linear`` and their ``-random-init`` twins, drawn with ``--seed 0``) and a
report whose verdict is pass; the k-NN (k 20, T 0.07) and linear-probe top-1 of the export beat
the twin's by a margin.

Measured on the 2-core development machine (data.workers=0, as here; docs/training.md §7.1 has
the per-seed top-1): k-NN SSL - random = 45.3 / 54.1 / 48.0 / 50.6 / 49.5 points for engine.seed
0..4 (SSL 83.1-89.7 %, random 33.6-37.8 %); the recipe's short linear probe 83.1 vs 18.6 % (seed
0) and 81.1 vs 16.1 % (seed 1) on a loaded machine, 78.6 vs 18.6 % on a fresh clone after the
faster blur. The asserted bound, MIN_MARGIN = 25 points for both, is 20 points under the smallest
measured margin: the runs are deterministic on one machine, but CI's CPU may sum in another order,
which moves a 360-image evaluation by a few images (1 image = 0.28 points) and the training by
about what another seed does (the k-NN spread above is 9 points), not by tens of points.

smoke_sere is not asserted: its k-NN does not beat random init (docs/training.md §7.2 gives what
was tried, with the measured figures).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

MIN_MARGIN = 25.0  # top-1 points, SSL minus random init (k-NN and linear probe)


@pytest.fixture(scope="module")
def smoke_care_run(tmp_path_factory: pytest.TempPathFactory, cache: Path, cli) -> Path:
    """The run folder of the shipped smoke_care recipe (seed 0), as the README runs it."""
    out = tmp_path_factory.mktemp("smoke_care_run")
    done = cli.run(
        cli.command(
            "smoke_care",
            "--output-dir",
            str(out),
            "--set",
            f'data.cache_dir="{cache}"',
            "data.workers=0",
            "engine.progress=false",
        ),
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "smoke_care"


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
