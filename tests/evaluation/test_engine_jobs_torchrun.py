"""``torchrun``: linear and finetune on two gloo processes give the 1-process results (same global
batch): the same results.json metrics and the same exported classifier."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers.eval_cli import ROOT, cli_args
from helpers.forked_jobs import free_port
from safetensors.torch import load_file

COMMON = ["--global-batch", "4", "--eval-epochs", "1", "--no-progress", "--device", "cpu",
          "--batch-size", "3", "--workers", "0"]  # fmt: skip
PROTOCOLS = {
    "linear": ["--epochs", "2", "--grid-lrs", "0.1,0.4", "--no-feature-cache"],
    # the random parts that draw per process (mixup, drop path, erasing, RandAugment) are off
    "finetune": ["--epochs", "2", "--warmup-epochs", "1", "--mixup", "0", "--cutmix", "0",
                 "--drop-path", "0", "--reprob", "0", "--aa", "", "--smoothing", "0"],
}  # fmt: skip


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_two_processes_give_the_one_process_results(
    protocol, tiny_hub, vit_hub, make_folder, tmp_path
):
    hub = tiny_hub if protocol == "linear" else vit_hub
    train = make_folder("train", {"a": 6, "b": 6}, seed=0, sizes=(40, 48))
    val = make_folder("val", {"a": 3, "b": 2}, seed=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    results, exports = {}, {}
    for procs in (1, 2):
        out = tmp_path / f"out{procs}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "selfsup_zoo.evaluation",
               *cli_args(protocol, f"local-dir:{hub}", train, val, out),
               *COMMON, *PROTOCOLS[protocol]]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[procs] = json.loads((out / "results.json").read_text())
        exports[procs] = load_file(str(out / "export" / "model.safetensors"))
    assert results[2]["run"]["world_size"] == 2
    one, two = results[1], results[2]
    assert one["metrics"].keys() == two["metrics"].keys()
    for row in one["metrics"]:
        for col, value in one["metrics"][row].items():
            assert two["metrics"][row][col] == pytest.approx(value, abs=1e-6), (row, col)
    assert one["details"].get("chosen_head") == two["details"].get("chosen_head")
    assert exports[1].keys() == exports[2].keys()
    for key, value in exports[1].items():
        torch.testing.assert_close(exports[2][key], value, atol=1e-5, rtol=1e-4, msg=key)
