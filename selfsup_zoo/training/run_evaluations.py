"""What ``reproduce`` evaluates around a training run: its command-line options, the periodic k-NN
hook, and after the export the final evaluations and the report.

* :func:`add_eval_arguments` adds the evaluation options; :func:`eval_overrides` turns them into
  recipe overrides of the ``[eval]`` table (they win over the recipe), :func:`eval_flags` gives
  them back for the resume command.
* :func:`periodic_knn` is the engine's epoch hook (``eval.knn_every``; ``evaluation.knn_hook``).
* :func:`finish` runs after a finished training (not after a preemption): the final evaluations
  of the export into ``<run>/eval/`` (``evaluation.verify``), then, on the main process, the report
  beside the export (``evaluation.report``). A failure there returns exit status 5 with the run
  and its export intact, and says which command redoes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from selfsup_zoo.evaluation.knn_hook import PeriodicKnn
from selfsup_zoo.evaluation.report import ReportError, write_report
from selfsup_zoo.evaluation.verify import VerifyError, format_results, verify_run
from selfsup_zoo.training.engine import RunResult
from selfsup_zoo.training.eval_config import EVAL_PROTOCOLS, resolve_protocols
from selfsup_zoo.training.recipe import Recipe, toml_string

__all__ = [
    "EVAL_FAILED",
    "add_eval_arguments",
    "eval_flags",
    "eval_overrides",
    "finish",
    "periodic_knn",
]

logger = logging.getLogger(__name__)

#: Exit status of a run whose training and export succeeded but whose evaluations or report did not.
EVAL_FAILED = 5


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the periodic k-NN and of the final evaluations (each overrides the recipe's
    ``[eval]`` table)."""
    g = p.add_argument_group("evaluations")
    g.add_argument("--eval-train", metavar="DIR", help="labelled images the k-NN votes with")
    g.add_argument("--eval-val", metavar="DIR", help="labelled images evaluated")
    g.add_argument(
        "--eval",
        action="append",
        metavar="|".join(EVAL_PROTOCOLS),
        help="final evaluations of the export (repeatable or a comma list; k-NN always unless "
        "none; all = the method's headline protocol; default: the recipe's eval.protocols)",
    )
    g.add_argument(
        "--eval-baseline",
        action="store_true",
        help="also evaluate the architecture with random weights (always for recipes outside "
        "the catalog)",
    )
    g.add_argument(
        "--eval-option",
        action="append",
        default=[],
        metavar="PROTOCOL=ARGS",
        help="further options of a final evaluation, e.g. --eval-option 'linear=--epochs 10'",
    )
    g.add_argument(
        "--knn-every", type=int, metavar="N", help="periodic k-NN every N epochs (0 off)"
    )


def eval_overrides(args: argparse.Namespace) -> list[str]:
    """The ``[eval]`` overrides (``KEY=VALUE``) that the evaluation options of ``args`` make."""
    extra = []
    if args.eval_train:
        extra.append(f"eval.train={toml_string(args.eval_train)}")
    if args.eval_val:
        extra.append(f"eval.val={toml_string(args.eval_val)}")
    if args.knn_every is not None:
        extra.append(f"eval.knn_every={args.knn_every}")
    if args.eval:
        extra.append(f"eval.protocols={json.dumps(args.eval)}")
    return extra


def eval_flags(args: argparse.Namespace) -> list[str]:
    """The evaluation options of ``args`` as command-line words (for the resume command)."""
    words: list[str] = []
    for flag, value in (("--eval-train", args.eval_train), ("--eval-val", args.eval_val)):
        if value:
            words += [flag, value]
    for item in args.eval or []:
        words += ["--eval", item]
    if args.eval_baseline:
        words.append("--eval-baseline")
    for item in args.eval_option:
        words += ["--eval-option", item]
    if args.knn_every is not None:
        words += ["--knn-every", str(args.knn_every)]
    return words


def periodic_knn(recipe: Recipe) -> PeriodicKnn | None:
    """The periodic k-NN hook of the recipe's ``[eval]`` table (None when it is off)."""
    cfg = recipe.eval
    if cfg.knn_every <= 0:
        return None
    if not cfg.train or not cfg.val:
        logger.warning(
            "eval.knn_every = %d but no evaluation folders: pass --eval-train and --eval-val "
            "for the periodic k-NN",
            cfg.knn_every,
        )
        return None
    return PeriodicKnn(recipe)


def finish(
    result: RunResult, recipe: Recipe, args: argparse.Namespace, extra_args: dict[str, list[str]]
) -> int:
    """What a run does after training (not when preempted or when nothing was exported): the final
    evaluations of its export and their tables, then the report (``report.json``, ``report.md``,
    ``plots/``, the measured model card) on the main process.

    Returns:
        The exit status: 0, or :data:`EVAL_FAILED` when an evaluation or the report failed.
    """
    if result.preempted or result.export_dir is None:
        return 0
    status = _evaluate(result, recipe, args, extra_args)
    if int(os.environ.get("RANK", "0")) != 0:
        return status
    try:
        path = write_report(result.run_dir)
    except Exception as err:  # noqa: BLE001 - a failed report leaves a good run: say so, exit 5
        return _failed_after_training(
            f"the report of {result.run_dir}",
            err,
            ReportError,
            "The run and its export are intact; write it again with python -m "
            f"selfsup_zoo.evaluation report {result.run_dir}",
        )
    verdict = json.loads(path.read_text(encoding="utf-8")).get("verdict", "")
    print(f"report: {path.with_suffix('.md')} (verdict: {verdict})")
    return status


def _failed_after_training(what: str, err: Exception, expected: type, redo: str) -> int:
    """Say that ``what`` failed after a good training run and how to redo it; returns exit 5.
    An ``expected`` error prints its message alone, any other also its type."""
    logger.debug("%s failed", what, exc_info=True)
    kind = "" if isinstance(err, expected) else f"{type(err).__name__}: "
    print(f"error: {what} failed: {kind}{err}\n{redo}", file=sys.stderr, flush=True)
    return EVAL_FAILED


def _evaluate(
    result: RunResult, recipe: Recipe, args: argparse.Namespace, extra_args: dict[str, list[str]]
) -> int:
    """The final evaluations of the export into ``<run>/eval/`` (every process takes part)."""
    rank = int(os.environ.get("RANK", "0"))
    cfg = recipe.eval
    protocols = resolve_protocols(cfg.protocols, recipe.method.kind)
    if not protocols:
        return 0
    if not cfg.train or not cfg.val:
        if rank == 0:
            print(
                "final evaluations skipped: pass --eval-train DIR --eval-val DIR (labelled image "
                "folders) to evaluate the export, or run python -m selfsup_zoo.evaluation verify "
                f"{result.run_dir} --train DIR --val DIR later"
            )
        return 0
    baseline = bool(args.eval_baseline or not recipe.checkpoint)
    try:
        done = verify_run(
            result.run_dir,
            protocols,
            cfg.train,
            cfg.val,
            baseline,
            recipe.engine.device,
            seed=recipe.engine.seed,  # the random-init twin of a seed-N run is drawn with seed N
            extra_args=extra_args,
        )
    except Exception as err:  # noqa: BLE001 - any failure here leaves a good run: say so, exit 5
        return _failed_after_training(
            f"the final evaluations of {result.run_dir}",
            err,
            VerifyError,
            f"The run and its export {result.export_dir} are intact; evaluate them again with "
            f"python -m selfsup_zoo.evaluation verify {result.run_dir}",
        )
    if rank == 0 and done:
        print(format_results(done))
        print(f"evaluations: {Path(result.run_dir) / 'eval'}")
    return 0
