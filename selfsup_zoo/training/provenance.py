"""Where a run's weights came from: code commit, library versions, recipe hash, processes, devices.

The engine records a :class:`RunProvenance` once at the start of a run, stores it in every
checkpoint and writes it (with the step counts and wall time) into the exported hub folder; an
export from a checkpoint later reads it back from the file, so both exports say the same thing.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm
import torch

from selfsup_zoo import __version__ as zoo_version
from selfsup_zoo.training.recipe import Recipe

__all__ = ["RunProvenance", "git_commit", "device_name", "describe_devices", "export_provenance"]


def git_commit() -> str:
    """Commit of the source tree the package runs from (``-dirty`` when it has local changes;
    "" outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    if out.returncode != 0:
        return ""
    commit = out.stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def device_name(device: torch.device) -> str:
    """A device as a person names it: the GPU model for CUDA (``NVIDIA H200``), else its type."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def describe_devices(names: Sequence[str]) -> str:
    """One line for the devices of every process: ``["cpu", "cpu"]`` -> ``"2 x cpu"``."""
    return ", ".join(f"{n} x {name}" for name, n in sorted(Counter(names).items()))


@dataclass(frozen=True)
class RunProvenance:
    """What a run is made of, fixed for the run (computed once: :func:`git_commit` runs two
    subprocesses)."""

    git_commit: str
    recipe_sha256: str  # sha256 of the recipe JSON (``recipe.json`` without its final newline)
    world_size: int
    devices: str  # e.g. "8 x NVIDIA H200"
    torch: str
    timm: str
    selfsup_zoo: str = ""  # "" in checkpoints written before it was recorded
    python: str = ""

    @classmethod
    def collect(cls, recipe_json: str, world_size: int, devices: str) -> RunProvenance:
        """The provenance of a run starting now in this environment."""
        return cls(
            git_commit=git_commit(),
            recipe_sha256=hashlib.sha256(recipe_json.encode("utf-8")).hexdigest(),
            world_size=world_size,
            devices=devices,
            torch=str(torch.__version__),  # a TorchVersion: keep the plain string
            timm=str(timm.__version__),
            selfsup_zoo=zoo_version,
            python=platform.python_version(),
        )

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any]) -> RunProvenance:
        """Read it back from a checkpoint; a checkpoint from before it was stored gives what it
        has (commit and world size; the other fields "")."""
        stored = state.get("provenance")
        if isinstance(stored, Mapping):
            fields = {k: stored[k] for k in cls.__dataclass_fields__ if k in stored}
            return cls(**{"torch": "", "timm": "", **fields})
        return cls(
            git_commit=str(state.get("git_commit", "")),
            recipe_sha256="",
            world_size=int(state.get("world_size", 1)),
            devices="",
            torch="",
            timm="",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_provenance(
    recipe: Recipe,
    run: RunProvenance,
    *,
    steps: int,
    total_steps: int,
    wall_time_s: float,
    source_checkpoint: str | None = None,
) -> dict[str, Any]:
    """The ``provenance`` of a hub folder written from a run (shown in its card and config.json).

    Args:
        recipe: the run's recipe.
        run: the run's provenance; fields it does not know ("") are left out.
        steps: optimizer steps done; total_steps: steps of the whole schedule.
        wall_time_s: training wall time so far (over every resume).
        source_checkpoint: file name of the checkpoint exported, when exported from one.

    Returns:
        A JSON-serialisable dict.
    """
    out: dict[str, Any] = {
        "recipe": recipe.name,
        "checkpoint": recipe.checkpoint,
        "method": recipe.method.kind,
        "git_commit": run.git_commit,
        "world_size": run.world_size,
        "wall_time_s": round(wall_time_s, 3),
        "steps": steps,
        "total_steps": total_steps,
    }
    for key in ("recipe_sha256", "devices", "torch", "timm", "selfsup_zoo", "python"):
        value = getattr(run, key)
        if value:
            out[key] = value
    if source_checkpoint is not None:
        out["source_checkpoint"] = source_checkpoint
    return out
