"""Fixtures of the training tests: small real image folders and the ``reproduce`` command line run
in fresh processes (one, or several under ``torch.distributed.run``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfsup_zoo.training.data import resolve_data_root

ROOT = Path(__file__).resolve().parents[2]


def _digits_folder(dest: Path, count: int, cache: Path) -> Path:
    """A class-folder copy of the first ``count`` embedded digits (real PNGs) at 32 px."""
    src = resolve_data_root("embedded:digits@32", cache)
    all_files = sorted(src.rglob("*.png"))
    files = all_files[:: max(1, len(all_files) // count)][:count]  # spread over the 10 classes
    for f in files:
        target = dest / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    return dest


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the embedded digits are unpacked (one folder per test module)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    """48 real digits: 6 steps per epoch at global batch 8, 12 steps in the 2-epoch tiny recipe."""
    return _digits_folder(tmp_path_factory.mktemp("digits48"), 48, cache)


class ReproduceCli:
    """``python -m selfsup_zoo.training.reproduce`` in a fresh process, from the checkout."""

    root = ROOT

    @staticmethod
    def env() -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        env.setdefault("OMP_NUM_THREADS", "1")
        # Fail loudly rather than hang if a peer process dies in a collective.
        env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        return env

    @staticmethod
    def command(*args: str, nproc: int = 1) -> list[str]:
        """The command line; ``nproc > 1`` runs it under ``torch.distributed.run --standalone``."""
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

    @classmethod
    def run(cls, cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run any command from the checkout with :meth:`env`; output captured as text."""
        return subprocess.run(
            cmd, cwd=ROOT, env=cls.env(), capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture(scope="session")
def cli() -> ReproduceCli:
    return ReproduceCli()
