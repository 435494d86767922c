"""Pass/fail of measured vs reference on crafted results, and the card of a catalog entry with
both the paper's and the measured results in its model-index."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from selfsup_zoo import catalog
from selfsup_zoo.cards import render_model_card
from selfsup_zoo.cards.measured import MEASURED_SOURCE, MeasuredResult
from selfsup_zoo.evaluation.report.compare import (
    PAPER_TOLERANCE,
    RANDOM_INIT_MARGIN,
    compare,
    verdict,
)
from selfsup_zoo.evaluation.report.schema import Measurement

CARE = "care_resnet50.in1k_ep100"
SERE = "sere_vit_small.in1k_ep100"


def _m(protocol: str, top1: float, top5: float | None = None, twin: bool = False) -> Measurement:
    label = protocol + ("-random-init" if twin else "")
    return Measurement(label, protocol, twin, "row", top1, top5)


def _paper(name: str, metric: str) -> float:
    return next(r.value for r in catalog.get_entry(name).results if r.metric == metric)


def test_smoke_run_passes_only_with_the_margin_over_random_init() -> None:
    margin = RANDOM_INIT_MARGIN["knn"]
    assert margin == 5.0
    ok = compare([_m("knn", 45.0), _m("knn", 40.0, twin=True)], ["knn"], "")
    assert [(c.status, c.difference, c.reference_kind) for c in ok] == [
        ("pass", 5.0, "random-init")
    ]
    bad = compare([_m("knn", 44.9), _m("knn", 40.0, twin=True)], ["knn"], "")
    assert bad[0].status == "fail" and verdict(bad) == "fail"
    alone = compare([_m("knn", 80.0)], ["knn"], "")
    assert alone[0].status == "no reference" and verdict(alone) == "no reference"


def test_catalog_run_is_held_to_the_paper_within_the_tolerance() -> None:
    top1, top5 = _paper(CARE, "top1"), _paper(CARE, "top5")
    tol = PAPER_TOLERANCE[("linear", "top1")]
    checks = compare([_m("linear", top1 - tol, top5 + 0.2)], ["linear"], CARE)
    assert [(c.metric, c.status, c.reference_kind) for c in checks] == [
        ("top1", "pass", "paper"),
        ("top5", "pass", "paper"),
    ]
    assert checks[0].difference == pytest.approx(-tol) and verdict(checks) == "pass"
    off = compare([_m("linear", top1 - tol - 0.01, top5)], ["linear"], CARE)
    assert off[0].status == "fail" and verdict(off) == "fail"
    high = compare([_m("finetune", _paper(SERE, "top1") + 0.6)], ["finetune"], SERE)
    assert high[0].status == "fail" and high[0].tolerance == 0.5  # too good is suspicious too


def test_knn_of_a_catalog_run_has_no_paper_figure_and_a_missing_protocol_fails() -> None:
    checks = compare([_m("knn", 60.0), _m("knn", 10.0, twin=True)], ["knn", "linear"], CARE)
    knn, linear_top1, linear_top5 = checks
    assert knn.reference_kind == "random-init" and knn.status == "pass"
    assert linear_top1.status == linear_top5.status == "missing" and verdict(checks) == "fail"


def test_catalog_card_has_paper_and_measured_model_index() -> None:
    entry = catalog.get_entry(CARE)
    measured = [
        MeasuredResult("linear", "best (paper)", "imagenet/val", "ab" * 32, 50000, 72.1, 90.3)
    ]
    text = render_model_card(entry, sha256="0" * 64, measured=measured)
    card = ModelCard(text)
    assert card.data.to_dict()["model-index"][0]["name"] == CARE
    name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    sources = [r.source_name for r in results]
    assert MEASURED_SOURCE in sources and any(s != MEASURED_SOURCE for s in sources)
    paper = [r for r in results if r.source_name != MEASURED_SOURCE]
    mine = [r for r in results if r.source_name == MEASURED_SOURCE]
    assert {(r.metric_type, r.metric_value) for r in paper} == {
        ("accuracy", _paper(CARE, "top1")),
        ("top_5_accuracy", _paper(CARE, "top5")),
    }
    assert {(r.metric_type, r.metric_value) for r in mine} == {
        ("accuracy", 72.1),
        ("top_5_accuracy", 90.3),
    }
    assert mine[0].dataset_args == {"fingerprint": "ab" * 32, "images": 50000}
    assert "## Results reported upstream" in text and "## Results measured on these weights" in text
    # Without measured results the card is what it was.
    plain = render_model_card(entry, sha256="0" * 64)
    assert MEASURED_SOURCE not in plain and "measured on these weights" not in plain
