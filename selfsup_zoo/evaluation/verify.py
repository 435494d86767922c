"""The final evaluations of a run's exported backbone: ``<run>/eval/<label>/results.json``.

``reproduce`` ends with :func:`verify_run` after a successful export (a preempted run does not
evaluate); ``python -m selfsup_zoo.evaluation verify RUN`` runs it again on a finished run. Each
evaluation is a protocol of :data:`~selfsup_zoo.evaluation.registry.PROTOCOLS` run on
``local-dir:<run>/export`` exactly as its command line would, into its own folder:

* ``eval/knn``: the weighted k-NN (always); ``eval/knn-random-init``: the same architecture with
  random weights (``--seed``), the baseline that shows what pre-training added;
* ``eval/linear``, ``eval/finetune`` (each with its ``-random-init`` twin with the baseline): when
  asked (``all`` = the method's headline protocol: CARE linear, SERE fine-tuning);
* ``eval/plan.json``: what was asked, ``{"protocols", "train", "val", "baseline"}``, so that a
  report can say what is missing.

Each ``results.json`` is the protocol's own, plus ``"export": {"path", "sha256"}`` (the sha256 of
the hub folder's weights file). An evaluation whose ``results.json`` names the export's current
sha256 is not run again (a resumed or repeated ``reproduce``); the engine jobs (linear, finetune)
keep their run folders per sha256 (``eval/<label>/run-<sha[:12]>``) and resume them. Under
``torchrun`` every process calls :func:`verify_run`; the protocols share the work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfsup_zoo._io import atomic_write_text
from selfsup_zoo.catalog import WEIGHTS_FILENAME
from selfsup_zoo.evaluation.cli import run_protocol
from selfsup_zoo.evaluation.results import RESULTS_FILE, format_table, write_results
from selfsup_zoo.training.eval_config import EVAL_PROTOCOLS, resolve_protocols
from selfsup_zoo.training.recipe import Recipe
from selfsup_zoo.weights import file_sha256

logger = logging.getLogger(__name__)

__all__ = [
    "EVAL_DIR",
    "PLAN_FILE",
    "EvalItem",
    "VerifyError",
    "build_parser",
    "format_results",
    "main",
    "parse_eval_options",
    "plan_items",
    "verify_run",
]

EVAL_DIR = "eval"
PLAN_FILE = "plan.json"
_ENGINE_JOBS = ("linear", "finetune")


class VerifyError(RuntimeError):
    """A final evaluation could not run or failed (the run and its export are left intact)."""


@dataclass(frozen=True)
class EvalItem:
    """One final evaluation: its folder name under ``eval/``, protocol and weights."""

    label: str
    protocol: str
    random_init: bool


def plan_items(protocols: Sequence[str], baseline: bool) -> list[EvalItem]:
    """The evaluations of ``protocols`` (``knn``, ``linear``, ``finetune``), each followed by its
    random-init twin when ``baseline`` (for fine-tuning: the same recipe trained from random
    weights, what the report's fine-tuning margin is measured against)."""
    items = []
    for p in protocols:
        items.append(EvalItem(p, p, False))
        if baseline:
            items.append(EvalItem(f"{p}-random-init", p, True))
    return items


def _recorded_sha(path: Path) -> str | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    export = record.get("export") if isinstance(record, dict) else None
    return str(export.get("sha256")) if isinstance(export, dict) else None


def _argv(
    item: EvalItem, export: Path, sha: str, out: Path, train: str, val: str, device: str, seed: int
) -> list[str]:
    argv = [f"local-dir:{export}", "--train", train, "--val", val, "--device", device]
    argv += ["--seed", str(seed)]
    if item.random_init:
        argv.append("--random-init")
    if item.protocol in _ENGINE_JOBS:
        argv += ["--out", str(out), "--run-dir", str(out / f"run-{sha[:12]}"), "--resume", "auto"]
    return argv


def verify_run(
    run_dir: str | Path,
    protocols: Sequence[str],
    train: str,
    val: str,
    baseline: bool,
    device: str = "auto",
    *,
    seed: int = 0,
    extra_args: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the final evaluations of ``<run_dir>/export`` into ``<run_dir>/eval/<label>/``.

    Call it from every process of a job (after ``train`` returned).

    Args:
        run_dir: the run folder; its ``export/`` hub folder is evaluated.
        protocols: ``knn``, ``linear``, ``finetune`` (``eval_config.resolve_protocols``).
        train, val: labelled image folders (or ``embedded:digits@32/train`` ...).
        baseline: also evaluate the random-init twin of each protocol.
        device: ``auto``, ``cpu``, ``cuda`` (the protocols' ``--device``).
        seed: the protocols' ``--seed`` (the random-init weights, any random draw).
        extra_args: protocol -> further command-line options of that protocol
            (``{"linear": ["--epochs", "10"]}``).

    Returns:
        label -> results.json content, for the evaluations done now or earlier (on the main
        process; the other processes get ``{}``).

    Raises:
        VerifyError: no export, no folders, or a protocol failed (the message names it).
    """
    run = Path(run_dir)
    export = run / "export"
    weights = export / WEIGHTS_FILENAME
    if not weights.is_file():
        raise VerifyError(f"{run} has no exported hub folder ({weights} is missing)")
    if not train or not val:
        raise VerifyError(
            "no evaluation folders: pass --eval-train DIR --eval-val DIR (labelled image folders "
            "<DIR>/<class>/<image>, e.g. the ImageNet train and val folders)"
        )
    sha = file_sha256(weights)
    # The protocols join and leave the process group themselves; between them there is none, so
    # the rank comes from torchrun's environment.
    is_main = int(os.environ.get("RANK", "0")) == 0
    out_root = run / EVAL_DIR
    items = plan_items(protocols, baseline)
    if is_main:
        out_root.mkdir(parents=True, exist_ok=True)
        plan = {"protocols": list(protocols), "train": train, "val": val, "baseline": baseline}
        atomic_write_text(out_root / PLAN_FILE, json.dumps(plan, indent=2) + "\n")
    done: dict[str, dict[str, Any]] = {}
    for item in items:
        out = out_root / item.label
        results_path = out / RESULTS_FILE
        if _recorded_sha(results_path) == sha:
            logger.info("%s: already evaluated for this export (%s), skipped", item.label, sha[:12])
            if is_main:
                done[item.label] = json.loads(results_path.read_text(encoding="utf-8"))
            continue
        argv = _argv(item, export, sha, out, train, val, device, seed)
        argv += list((extra_args or {}).get(item.protocol, ()))
        logger.info("final evaluation %s: %s %s", item.label, item.protocol, " ".join(argv))
        code, results = run_protocol(
            item.protocol,
            argv,
            prog=f"python -m selfsup_zoo.evaluation {item.protocol}",
            name=item.protocol,
            out_by_default=False,
            print_table=False,
        )
        if code != 0:
            raise VerifyError(f"the {item.label} evaluation failed (exit status {code})")
        if results is not None:
            results["export"] = {"path": str(export), "sha256": sha}
            write_results(out, results)
            done[item.label] = results
    return done


def format_results(done: Mapping[str, Mapping[str, Any]]) -> str:
    """One table per evaluation (its label and its protocol's metric rows), for the terminal."""
    blocks = [format_table(label, dict(r.get("metrics", {}))) for label, r in done.items()]
    return "\n\n".join(blocks)


def build_parser(prog: str = "python -m selfsup_zoo.evaluation verify") -> argparse.ArgumentParser:
    """``verify RUN [--train DIR --val DIR] [--eval ...] [--baseline]``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run the final evaluations of a finished reproduce run again (those already "
        "done for the same exported weights are skipped).",
    )
    p.add_argument("run", help="the run folder (it holds recipe.json and export/)")
    p.add_argument("--train", help="labelled images (default: the recipe's eval.train)")
    p.add_argument("--val", help="labelled images evaluated (default: the recipe's eval.val)")
    p.add_argument(
        "--eval",
        action="append",
        metavar="|".join(EVAL_PROTOCOLS),
        help="protocols (repeatable or a comma list; default: the recipe's eval.protocols)",
    )
    p.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also the random-init twin (default: on for recipes outside the catalog)",
    )
    p.add_argument("--device", default="", help="auto, cpu, cuda (default: the recipe's)")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the protocols' --seed (default: the run's engine.seed, as reproduce uses)",
    )
    p.add_argument(
        "--eval-option",
        action="append",
        default=[],
        metavar="PROTOCOL=ARGS",
        help="further options of a protocol, e.g. --eval-option 'linear=--epochs 10'",
    )
    return p


def parse_eval_options(items: Sequence[str]) -> dict[str, list[str]]:
    """``PROTOCOL=ARGS`` strings -> protocol -> its further command-line options.

    Raises:
        ValueError: not of that form, or an unknown protocol.
    """
    out: dict[str, list[str]] = {}
    for item in items:
        protocol, sep, text = item.partition("=")
        if not sep or protocol not in ("knn", "linear", "finetune"):
            raise ValueError(
                f"--eval-option {item!r}: write knn=ARGS, linear=ARGS or finetune=ARGS"
            )
        out.setdefault(protocol, []).extend(shlex.split(text))
    return out


def main(
    argv: list[str] | None = None, prog: str = "python -m selfsup_zoo.evaluation verify"
) -> int:
    """``python -m selfsup_zoo.evaluation verify RUN``; exit status 0, 2 (bad input) or 5 (an
    evaluation failed)."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run = Path(args.run)
    try:
        recipe = Recipe.from_json((run / "recipe.json").read_text(encoding="utf-8"))
        protocols = resolve_protocols(args.eval or recipe.eval.protocols, recipe.method.kind)
        extra = parse_eval_options([*recipe.eval.option_items(), *args.eval_option])
    except (OSError, ValueError) as err:
        print(f"error: {run} is not a finished run folder or an option is wrong: {err}")
        return 2
    baseline = args.baseline if args.baseline is not None else not recipe.checkpoint
    try:
        done = verify_run(
            run,
            protocols,
            args.train or recipe.eval.train,
            args.val or recipe.eval.val,
            baseline,
            args.device or recipe.engine.device,
            seed=recipe.engine.seed if args.seed is None else args.seed,
            extra_args=extra,
        )
    except VerifyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 5
    if done:
        print(format_results(done))
    return 0
