"""The embedded smoke run of CARE learns: the k-NN top-1 of its exported backbone on the held-out
digits beats the same architecture with random weights by a margin.

The shipped smoke_care recipe runs unchanged (seed 0, ~1 min on 2 CPU cores), then the weighted
k-NN (k 20, T 0.07) of the exported hub folder and of its random-init twin (``--random-init --seed
0``), both loaded the way ``python -m selfsup_zoo.evaluation.knn`` loads them.

Measured on the 2-core development machine (data.workers=0, as here; docs/training.md §7.1
has the per-seed top-1): SSL - random = 45.3 / 54.1 / 48.0 / 50.6 / 49.5 points for engine.seed
0..4 (SSL 83.1-89.7 %, random 33.6-37.8 %). The asserted bound, MIN_MARGIN = 25 points, is 20 points
under the smallest measured margin: the runs are deterministic on one machine, but CI's CPU may sum
in another order, which moves a 360-image k-NN by a few images (1 image = 0.28 points) and the
training by about what another seed does (the spread above is 9 points), not by tens of points.

smoke_sere is not asserted: its k-NN does not beat random init (docs/training.md §7.2 gives what
was tried, with the measured figures).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from selfsup_zoo.evaluation.knn import knn_evaluate
from selfsup_zoo.evaluation.model_loading import create_eval_model
from selfsup_zoo.training.data import resolve_data_root

MIN_MARGIN = 25.0  # k-NN top-1 points, SSL minus random init


def _knn_top1(model_name: str, cache: Path, *, random_init: bool) -> float:
    """k-NN top-1 (%) of a model on the embedded digits' held-out split, training split as bank."""
    model = create_eval_model(model_name, random_init=random_init, seed=0)
    train = resolve_data_root("embedded:digits@32/train", cache)
    val = resolve_data_root("embedded:digits@32/val", cache)
    return float(knn_evaluate(model, train, val, k=20)["top1"])


@pytest.fixture(scope="module")
def smoke_care_export(tmp_path_factory: pytest.TempPathFactory, cache: Path, cli) -> Path:
    """The hub folder of the shipped smoke_care recipe (seed 0), as the README runs it."""
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
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "smoke_care" / "export"


def test_smoke_care_beats_its_random_init_twin_on_knn(smoke_care_export: Path, cache: Path):
    ssl = _knn_top1(f"local-dir:{smoke_care_export}", cache, random_init=False)
    rnd = _knn_top1(f"local-dir:{smoke_care_export}", cache, random_init=True)
    assert ssl - rnd >= MIN_MARGIN, (ssl, rnd)
