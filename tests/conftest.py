"""Shared fixtures: a hermetic, offline environment and a hand-built Hugging Face cache.

The Hugging Face variables are set here, before any test module imports ``huggingface_hub``
(it reads them once, at import), so that every test runs offline against a cache it builds itself
and never touches the user's caches. The zoo tests (``tests/zoo/``) also share a hub folder of
ResNet-50 weights, ViT-S weights, and a runner for fresh Python processes, as fixtures.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import torch
from helpers.subprocesses import run_python

ROOT = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="selfsup-zoo-tests-"))
os.environ["HF_HOME"] = str(_SESSION_DIR / "hf_home")
os.environ.pop("HF_HUB_CACHE", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["SELFSUP_ZOO_WEIGHTS"] = str(_SESSION_DIR / "no_weights_here")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture
def weights_dir(tmp_path, monkeypatch) -> Path:
    """A fresh, empty local weights directory (``SELFSUP_ZOO_WEIGHTS``)."""
    path = tmp_path / "zoo_weights"
    path.mkdir()
    monkeypatch.setenv("SELFSUP_ZOO_WEIGHTS", str(path))
    return path


@pytest.fixture
def hf_cache() -> Iterator[Callable[[str, Mapping[str, Path]], Path]]:
    """Put files into the session's Hugging Face cache as repo ``org/name`` at ``main``.

    Layout as huggingface_hub writes it: ``models--org--name/refs/main`` holds a commit sha and
    ``snapshots/<sha>/`` the files (plain copies instead of blob symlinks work the same).
    Returns the snapshot folder. The repos are removed again after the test, so that a catalog
    repo cached by one test does not serve another test's ``pretrained=True``.
    """
    added: list[Path] = []

    def add(repo_id: str, files: Mapping[str, Path]) -> Path:
        hub = Path(os.environ["HF_HOME"]) / "hub"
        repo_dir = hub / ("models--" + repo_id.replace("/", "--"))
        sha = hashlib.sha1(repo_id.encode()).hexdigest()  # any 40-hex commit id will do
        snapshot = repo_dir / "snapshots" / sha
        snapshot.mkdir(parents=True, exist_ok=True)
        for name, src in files.items():
            shutil.copyfile(src, snapshot / name)
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / "main").write_text(sha)
        added.append(repo_dir)
        return snapshot

    yield add
    for repo_dir in added:
        shutil.rmtree(repo_dir, ignore_errors=True)


@pytest.fixture
def python_runner() -> Callable[..., subprocess.CompletedProcess]:
    """:func:`run_python`, for tests that start a fresh interpreter (``with_zoo=``, ``cwd=``)."""
    return run_python


def _randomise_bn(model: torch.nn.Module) -> None:
    # Non-trivial running statistics, so that a lost buffer would change the outputs.
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=g))


@pytest.fixture(scope="session")
def r50_folder(tmp_path_factory):
    """(ResNet-50 with random BN statistics, its hub folder as ``care_resnet50.in1k_ep100``)."""
    # Imported late: timm imports huggingface_hub, which must see the variables set above.
    import timm

    from selfsup_zoo import write_hub_folder

    model = timm.create_model("resnet50", num_classes=0).eval()
    _randomise_bn(model)
    folder = write_hub_folder(
        tmp_path_factory.mktemp("r50") / "hub",
        model.state_dict(),
        architecture="resnet50",
        checkpoint="care_resnet50.in1k_ep100",
        provenance={"test": "r50"},
    )
    return model, folder


@pytest.fixture(scope="session")
def vits_state():
    """State dict of a headless timm ``vit_small_patch16_224`` (random init)."""
    import timm  # late, as in r50_folder

    return timm.create_model("vit_small_patch16_224", num_classes=0).eval().state_dict()
