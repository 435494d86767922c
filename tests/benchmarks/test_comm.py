"""``python -m benchmarks comm``: the collectives of one distributed step in real gloo processes,
and the scaling estimate made from them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.comm import Collective, StepTraffic, exposed_seconds, main

ROOT = Path(__file__).resolve().parents[2]


def test_two_gloo_processes_send_the_gradients_once_and_the_batchnorm_statistics(
    tmp_path: Path,
) -> None:
    out = tmp_path / "comm.json"
    command = [sys.executable, "-m", "benchmarks", "comm", "--quick", "--json", str(out)]
    command += ["--gpus", "8", "--bus-gbps", "100", "--latency-us", "20"]
    command += ["--step-seconds", "0.5", "0.25"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    care, sere = json.loads(out.read_text())
    for entry in (care, sere):
        # DDP's buckets hold every trainable element once: the gradient all-reduce of a step
        assert entry["buckets"] and sum(entry["buckets"]) == entry["trainable"] > 0
        kinds = {c["kind"]: c for c in entry["collectives"]}
        assert kinds["gloo:all_reduce"]["calls"] > len(entry["buckets"])  # and the others
        efficiency = entry["efficiency"]
        assert 0 < efficiency["low"] < efficiency["high"] <= 1
    # CARE: the synchronised BatchNorms of the student (forward and backward) and the teacher
    # (forward), so many small all-reduces beside the buckets; SERE's ViT has LayerNorms, and its
    # few all-reduces are the heads' BatchNorms and the iBOT centres
    care_small = _all_reduce_calls(care) - len(care["buckets"])
    sere_small = _all_reduce_calls(sere) - len(sere["buckets"])
    assert care_small > sere_small > 0
    assert "gradient all-reduce" in done.stdout and "scaling efficiency" in done.stdout


def _all_reduce_calls(entry: dict[str, object]) -> int:
    collectives = entry["collectives"]
    assert isinstance(collectives, list)
    return next(int(c["calls"]) for c in collectives if c["kind"] == "gloo:all_reduce")


def test_exposed_seconds_is_the_ring_all_reduce_time_with_and_without_the_buckets() -> None:
    traffic = StepTraffic(
        method="care",
        processes=2,
        trainable=2_000_000,
        collectives=[Collective("gloo:all_reduce", 5, 2_001_000), Collective("gloo:x", 1, 0)],
        buckets=[1_000_000, 1_000_000],
    )
    every, rest = exposed_seconds(traffic, gpus=8, bus_gbps=100.0, latency_us=10.0)
    ring = 2 * 7 / 8
    assert rest == pytest.approx(4 * 10e-6 + ring * 1_000 * 4 / 100e9)
    assert every == pytest.approx(6 * 10e-6 + ring * 2_001_000 * 4 / 100e9)
    assert [c.calls for c in traffic.others()] == [3, 1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--processes", "1"], "at least 2"),
        (["--gpus", "8"], "needs all of"),
        (
            ["--gpus", "8", "--bus-gbps", "1", "--latency-us", "1", "--step-seconds", "1"],
            "one value per method",
        ),
    ],
)
def test_bad_arguments_say_what_is_wrong(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
