"""The runner's FLOP-rate column: the peak case, the steps' shares of it, and when it runs."""

from __future__ import annotations

import argparse

import torch

from benchmarks.cli import _plan
from benchmarks.peak import prepare_matmul
from benchmarks.report import PEAK_CASE, Row, format_table, measured_peak
from benchmarks.timing import count_flops, measure


def _args(*only: str) -> argparse.Namespace:
    return argparse.Namespace(
        only=list(only), quick=True, gpu=False, official_care=None, official_sere=None
    )


def test_the_peak_case_times_one_matmul_and_counts_its_flops() -> None:
    prepared = prepare_matmul("cpu", quick=True)
    measured = measure(prepared, warmup=1, repeats=2)
    assert measured.flops == 2 * 256**3
    assert len(measured.seconds) == 2 and all(s > 0 for s in measured.seconds)


def test_step_rows_show_their_rate_and_share_of_the_measured_peak() -> None:
    peak_result = {"seconds": [0.5, 0.4, 0.6], "items": 1, "maxrss_mb": 10.0, "flops": 40e9}
    step_results = [
        {"seconds": [2.0], "items": 8, "maxrss_mb": 100.0, "flops": 80e9},
        {"seconds": [2.0, 2.0], "items": 8, "maxrss_mb": 120.0, "flops": 80e9},
    ]
    rows = [
        Row.from_results(PEAK_CASE, "ours", "fp32", [peak_result]),
        Row.from_results("care_step", "ours", "official", step_results),
        Row.from_results("care_views", "ours", "official", [step_results[0] | {"flops": None}]),
    ]
    peak = measured_peak(rows)
    assert peak == 40e9 / 0.5  # the median call time
    assert rows[1].flop_rate() == 40e9 and rows[1].peak_mb == 120.0
    table = format_table(rows, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 2, peak)
    assert "GFLOP/s shares are of 80.0 GFLOP/s" in table
    step_row = "| care_step | ours | official | 4.00 / 4.00 / 4.00 | 2.000 | 120 | 40.0 (50 %) |"
    assert step_row in table
    assert "| 80.0 |" in table  # the peak row: its rate, no share of itself
    assert "| care_views | ours | official | 4.00 / 4.00 / 4.00 | 2.000 | 100 |  |" in table
    assert measured_peak(rows[1:]) is None


def test_the_peak_case_runs_whenever_a_step_does() -> None:
    def cases(*only: str) -> list[str]:
        return list(dict.fromkeys(run.case for run in _plan(_args(*only)).runs))

    assert cases("care_step") == [PEAK_CASE, "care_step"]
    assert cases("sere") == [PEAK_CASE, "sere_step", "sere_views"]
    assert cases("care_views") == ["care_views"]
    assert cases()[0] == PEAK_CASE


def test_flop_counts_of_a_step_include_backward() -> None:
    # a linear layer: forward 2*n*i*o, backward twice that (input and weight gradients)
    layer = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(16, 64, requires_grad=True)
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 16 * 64 * 32
