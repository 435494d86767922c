"""Read a finished run folder into a :class:`~.schema.Report` (nothing is written here)."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from selfsup_zoo.errors import ZooError
from selfsup_zoo.evaluation.results import RESULTS_FILE
from selfsup_zoo.evaluation.verify import EVAL_DIR, PLAN_FILE, plan_items
from selfsup_zoo.training.checkpoint import CheckpointError, find_latest_checkpoint, load_checkpoint
from selfsup_zoo.training.epoch_hooks import read_evaluations
from selfsup_zoo.training.resume_checks import DataIdentity

from .compare import compare, verdict
from .schema import Measurement, Provenance, Report

logger = logging.getLogger(__name__)

__all__ = [
    "EVAL_LABELS",
    "PLAN_FILE",
    "ReportError",
    "collect",
    "read_json",
    "read_log",
    "resolve_run_dir",
]

#: The final evaluations a run may have, as folders under ``<run>/eval/`` (every protocol and its
#: random-init twin, in the order ``verify`` runs them).
EVAL_LABELS = tuple(item.label for item in plan_items(("knn", "linear", "finetune"), True))

#: results.json metrics row that holds a protocol's headline number.
_HEADLINE_ROWS: dict[str, tuple[str, ...]] = {
    "knn": ("k=20",),
    "linear": ("best (paper)", "last"),
    "finetune": ("best", "last"),
}


class ReportError(ZooError):
    """The folder cannot be reported on: not a run folder, no export, an unreadable file."""


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``.

    Raises:
        ReportError: missing, unreadable or not a JSON object.
    """
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"cannot read {path}: {err}") from None
    if not isinstance(value, dict):
        raise ReportError(f"{path} is not a JSON object")
    return value


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``log.jsonl`` (a last line cut short by a crash is skipped).

    Raises:
        ReportError: the file is missing, unreadable, has a bad line before its last, or no row.
    """
    path = run_dir / "log.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ReportError(f"{path} is missing: the run logged no step") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"cannot read {path}: {err}") from None
    rows = []
    for number, text in enumerate(lines, 1):
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            if number == len(lines):
                continue  # the last line of a run that crashed mid-write
            raise ReportError(f"{path} line {number} is not JSON: the log is damaged") from None
        if not isinstance(row, dict) or "step" not in row:
            raise ReportError(f"{path} line {number} is not a log row (no 'step')")
        rows.append(row)
    if not rows:
        raise ReportError(f"{path} has no row: the run logged no step")
    return rows


def resolve_run_dir(path: str | Path) -> Path:
    """The run folder of ``path``: a run folder itself, or its ``export/`` hub folder.

    Raises:
        ReportError: neither (the message says what a run folder holds), or no ``export/``.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a folder")
    if not (folder / "recipe.json").is_file() and (folder.parent / "recipe.json").is_file():
        folder = folder.parent  # the hub folder of a run
    if not (folder / "recipe.json").is_file():
        raise ReportError(
            f"{folder} is not a run folder (no recipe.json): give the folder that "
            "`python -m selfsup_zoo.training.reproduce` wrote (<output-dir>/<recipe name>)"
        )
    if not (folder / "export" / "config.json").is_file():
        raise ReportError(
            f"{folder} has no exported hub folder (export/config.json): the run did not finish; "
            f"resume it, or export a checkpoint with `python -m selfsup_zoo.training.export "
            f"{folder} {folder / 'export'}`"
        )
    return folder


def _headline(label: str, results: dict[str, Any]) -> Measurement:
    protocol = str(results.get("protocol", label.removesuffix("-random-init")))
    metrics = results.get("metrics") or {}
    wanted = _HEADLINE_ROWS.get(protocol, ())
    if protocol == "knn":
        ks = (results.get("hyperparameters") or {}).get("k") or []
        wanted = (*wanted, *(f"k={k}" for k in ks))
    row = next((r for r in (*wanted, *metrics) if r in metrics), "")
    values = metrics.get(row, {})

    def number(key: str) -> float | None:
        v = values.get(key)
        return float(v) if isinstance(v, (int, float)) else None

    return Measurement(
        label=label,
        protocol=protocol,
        random_init=bool(results.get("random_init", label.endswith("-random-init"))),
        row=row,
        top1=number("top1"),
        top5=number("top5"),
        data=dict(results.get("data") or {}),
        versions={str(k): str(v) for k, v in (results.get("versions") or {}).items()},
    )


def _measurements(run_dir: Path) -> list[Measurement]:
    found = []
    for label in EVAL_LABELS:
        path = run_dir / EVAL_DIR / label / RESULTS_FILE
        if path.is_file():
            found.append(_headline(label, read_json(path)))
    return found


def _plan(run_dir: Path, measurements: list[Measurement]) -> dict[str, Any]:
    path = run_dir / EVAL_DIR / PLAN_FILE
    if path.is_file():
        plan = read_json(path)
        plan.setdefault("protocols", [])
        return plan
    protocols = list(dict.fromkeys(m.protocol for m in measurements if not m.random_init))
    return {
        "protocols": protocols,
        "baseline": any(m.random_init for m in measurements),
        "inferred": True,  # no eval/plan.json: what exists is taken as what was asked
    }


def _data_identity(run_dir: Path, summary: dict[str, Any]) -> DataIdentity | None:
    # The training data's fingerprint lives in the checkpoints (it guards resumes).
    last = summary.get("last_checkpoint")
    try:
        if last and Path(last).is_file():
            return DataIdentity.from_checkpoint(load_checkpoint(last))
        found = find_latest_checkpoint(run_dir)
    except CheckpointError as err:
        logger.warning("no data fingerprint: %s", err)
        return None
    return None if found is None else DataIdentity.from_checkpoint(found[1])


def _provenance(run_dir: Path, config: dict[str, Any]) -> Provenance:
    zoo = config.get("selfsup_zoo") or {}
    made = dict(zoo.get("provenance") or {})
    summary_path = run_dir / "summary.json"
    summary = read_json(summary_path) if summary_path.is_file() else {}
    recipe_text = (run_dir / "recipe.json").read_text(encoding="utf-8")
    # The engine hashes the recipe JSON without recipe.json's final newline.
    recipe_sha = hashlib.sha256(recipe_text.rstrip("\n").encode("utf-8")).hexdigest()
    recipe = json.loads(recipe_text)
    world = int(made.get("world_size", summary.get("world_size", 1)))
    wall = float(made.get("wall_time_s", summary.get("wall_time_s", 0.0)))
    identity = _data_identity(run_dir, summary)
    versions = {k: str(made[k]) for k in ("torch", "timm") if made.get(k)}
    return Provenance(
        recipe=str(made.get("recipe", recipe.get("name", ""))),
        recipe_sha256=str(made.get("recipe_sha256") or recipe_sha),
        checkpoint=str(made.get("checkpoint") or recipe.get("checkpoint") or ""),
        method=str(made.get("method", (recipe.get("method") or {}).get("kind", ""))),
        git_commit=str(made.get("git_commit", "")),
        world_size=world,
        devices=str(made.get("devices", "")),
        steps=int(made.get("steps", summary.get("step", 0))),
        total_steps=int(made.get("total_steps", summary.get("total_steps", 0))),
        wall_time_s=round(wall, 3),
        # One device per process: device-hours = wall time x world size.
        device_hours=round(wall * world / 3600.0, 6),
        data_root=identity.root if identity else str((recipe.get("data") or {}).get("root", "")),
        data_fingerprint=identity.fingerprint if identity else "",
        data_images=identity.images if identity else None,
        weights_sha256=str(zoo.get("sha256", "")),
        versions=versions,
    )


def collect(run_dir: str | Path, plots: list[str] | None = None) -> Report:
    """Read a finished run folder.

    Args:
        run_dir: a run folder or its ``export/`` hub folder (:func:`resolve_run_dir`).
        plots: the PNG files already written, relative to the run folder.

    Returns:
        The report (``created`` is now, UTC).

    Raises:
        ReportError: see :func:`resolve_run_dir`, :func:`read_json`.
    """
    folder = resolve_run_dir(run_dir)
    config = read_json(folder / "export" / "config.json")
    provenance = _provenance(folder, config)
    measurements = _measurements(folder)
    plan = _plan(folder, measurements)
    checks = compare(measurements, [str(p) for p in plan["protocols"]], provenance.checkpoint)
    return Report(
        run_dir=str(folder),
        verdict=verdict(checks),
        checks=checks,
        measurements=measurements,
        periodic_knn=read_evaluations(folder),
        plan=plan,
        provenance=provenance,
        plots=list(plots or []),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(),
    )
