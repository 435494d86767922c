"""Shared helpers of the engine tests: small real image folders, tiny recipes, subprocess runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# A SERE model small enough for a training step in well under a second on 2 CPU cores: a 2-block
# ViT with 48-d tokens on 32-px digits, 2 local crops of 16 px, 64-d iBOT heads.
TINY_SERE = [
    "method.arch=vit_tiny_patch16_224",
    "method.model_args={img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2}",
    "method.out_dim=64",
    "method.patch_out_dim=64",
    "method.head_hidden_dim=32",
    "method.head_bottleneck_dim=16",
    "method.drop_path=0.0",
    "data.view_args.local_crops=2",
    "engine.global_batch=8",
    "engine.epochs=2",
    "engine.log_every=1",
    "engine.progress=false",
    "engine.export_at_end=false",
]


def digits_folder(dest: Path, count: int, cache: Path) -> Path:
    """A class-folder copy of the first ``count`` embedded digits (real PNGs) at 32 px."""
    from selfsup_zoo.training.data import resolve_data_root

    src = resolve_data_root("embedded:digits@32", cache)
    all_files = sorted(src.rglob("*.png"))
    files = all_files[:: max(1, len(all_files) // count)][:count]  # spread over the 10 classes
    for f in files:
        target = dest / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    return dest


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    # Fail loudly rather than hang if a peer process dies in a collective.
    env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    return env


def reproduce_cmd(*args: str, nproc: int = 1) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "selfsup_zoo.training.reproduce", *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "selfsup_zoo.training.reproduce",
        *args,
    ]


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )


def tensors_equal(a: object, b: object, path: str = "") -> list[str]:
    """Paths where two nested checkpoint structures differ (tensors compared with torch.equal)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return [] if (a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)) else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path} keys"]
        return [d for k in a for d in tensors_equal(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path} len"]
        return [
            d for i, (x, y) in enumerate(zip(a, b)) for d in tensors_equal(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [path]
