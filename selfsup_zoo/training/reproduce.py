"""Regenerate a catalog checkpoint: ``python -m selfsup_zoo.training.reproduce <name>``.

Examples::

    python -m selfsup_zoo.training.reproduce smoke_care                       # minutes on a CPU
    python -m selfsup_zoo.training.reproduce care_resnet50.in1k_ep100 \\
        --data-root /data/imagenet/train --dry-run
    torchrun --nproc_per_node 8 -m selfsup_zoo.training.reproduce sere_vit_small.in1k_ep100 \\
        --data-root /data/imagenet/train --resume auto
    python -m selfsup_zoo.training.reproduce smoke_sere --set engine.epochs=2 optim.base_lr=1e-3

``<name>`` is a catalog checkpoint name, a recipe name (``list`` shows them) or a ``.toml`` path.
The run goes to ``<output-dir>/<recipe name>/`` (default ``runs/``): ``recipe.json``,
``log.jsonl``, ``checkpoints/``, ``summary.json`` and the exported hub folder ``export/``.

Evaluations (the recipe's ``[eval]`` table, or ``--eval-train DIR --eval-val DIR``): with
``eval.knn_every`` N > 0 (``--knn-every N``) a k-NN of the backbone runs after every N-th epoch
and the last, into ``evaluations.jsonl`` (``selfsup_zoo.evaluation.knn_hook``). After the export
the run evaluates the hub folder into ``eval/<label>/results.json``: k-NN always, ``--eval
linear|finetune|all`` adds protocols, ``--eval none`` skips them; recipes outside the catalog (the
smoke runs) and ``--eval-baseline`` add the random-init twin (``selfsup_zoo.evaluation.verify``).
A resumed run skips the evaluations already done for the same exported weights. Last, the main
process writes the report beside the export (``report.json``, ``report.md``, ``plots/*.png``, the
measured results in the export's model card: ``selfsup_zoo.evaluation.report``).

SIGTERM (Slurm's notice before preemption) or SIGINT (Ctrl-C) stops the run at the end of the step
in flight with a checkpoint and the marker ``<run folder>/preempted``; the command exits 0 and
prints ``preempted at step N: resume with <the command> --resume auto`` (a preempted run does not
evaluate). Exit codes: 0 done or preempted, 2 bad input, 3 non-finite loss, 4 another process of
the job was lost, 5 the training and export succeeded but a final evaluation or the report failed
(the run folder and its export are intact; ``python -m selfsup_zoo.evaluation verify RUN`` and
``python -m selfsup_zoo.evaluation report RUN`` run them again).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from selfsup_zoo.evaluation.verify import parse_eval_options
from selfsup_zoo.training import data as sdata
from selfsup_zoo.training.dist import DEFAULT_TIMEOUT_S
from selfsup_zoo.training.engine import (
    CheckpointError,
    NonFiniteLossError,
    PeerLostError,
    RunFolderLockedError,
    RunResult,
    train,
)
from selfsup_zoo.training.recipe import (
    Recipe,
    RecipeError,
    list_recipes,
    load_recipe,
    toml_string,
)
from selfsup_zoo.training.run_evaluations import (
    add_eval_arguments,
    eval_flags,
    eval_overrides,
    finish,
    periodic_knn,
)

__all__ = ["main", "build_parser", "resolve_recipe", "resume_command"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m selfsup_zoo.training.reproduce",
        description="Regenerate a selfsup-zoo checkpoint from its recipe (one CPU, or many GPUs "
        "under torchrun).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="recipes: " + ", ".join(list_recipes()),
    )
    p.add_argument(
        "name",
        help="checkpoint or recipe name, or a path to a recipe .toml ('list' prints the names)",
    )
    p.add_argument(
        "--data-root",
        help="training images, <root>/<class>/<image> (ImageNet train folder), "
        "or embedded:digits[@SIZE]",
    )
    p.add_argument(
        "--output-dir",
        default="runs",
        help="runs go to <output-dir>/<recipe name>/ (default: runs)",
    )
    p.add_argument("--run-name", help="sub-folder name instead of the recipe name")
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="auto|PATH",
        help="continue from the newest good checkpoint of the run folder (auto, the default "
        "when the flag is given bare) or from a checkpoint file",
    )
    p.add_argument(
        "--allow-data-change",
        action="store_true",
        help="resume even though the data folder's images changed since the checkpoint (its "
        "fingerprint differs); without it such a resume is refused",
    )
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override recipe fields, e.g. --set optim.base_lr=0.1 engine.epochs=2",
    )
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="multi-process runs: how long a collective waits for the other processes before "
        f"the job fails (a process died or hung; default {DEFAULT_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved recipe and the batch layout, then exit",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_eval_arguments(p)
    return p


def resolve_recipe(
    name: str, data_root: str | None, overrides: list[str], args: argparse.Namespace | None = None
) -> Recipe:
    """Load ``name`` with ``--data-root``, the ``--set`` overrides and the evaluation options of
    ``args`` (these last win)."""
    extra = list(overrides)
    if data_root:
        extra.append(f"data.root={toml_string(data_root)}")
    if args is not None:
        extra += eval_overrides(args)
    return load_recipe(name, extra)


def resume_command(args: argparse.Namespace) -> str:
    """The command line that continues the run of ``args`` (the same one with ``--resume auto``).

    Under ``torchrun`` the launcher's process counts are kept (``GROUP_WORLD_SIZE`` nodes of
    ``LOCAL_WORLD_SIZE`` processes); a multi-node job also needs its rendezvous options again.

    Args:
        args: the parsed command line of this run.

    Returns:
        The shell command, quoted.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        nodes = os.environ.get("GROUP_WORLD_SIZE", "1")
        local = os.environ.get("LOCAL_WORLD_SIZE", str(world))
        words = ["torchrun"]
        words += [f"--nnodes={nodes}"] if nodes != "1" else ["--standalone"]
        words += [f"--nproc_per_node={local}", "-m", "selfsup_zoo.training.reproduce"]
    else:
        words = ["python", "-m", "selfsup_zoo.training.reproduce"]
    words.append(args.name)
    if args.data_root:
        words += ["--data-root", args.data_root]
    words += ["--output-dir", args.output_dir]
    if args.run_name:
        words += ["--run-name", args.run_name]
    if args.overrides:
        words += ["--set", *args.overrides]
    if args.dist_timeout != DEFAULT_TIMEOUT_S:
        words += ["--dist-timeout", f"{args.dist_timeout:g}"]
    words += eval_flags(args)
    if args.verbose:
        words.append("-v")
    words += ["--resume", "auto"]
    return shlex.join(words)


def _report(result: RunResult, args: argparse.Namespace) -> None:
    """What the main process prints when a run ends (done or preempted)."""
    print(f"run folder: {result.run_dir}")
    print(
        f"steps: {result.step}/{result.total_steps}, wall time {result.wall_time_s:.1f} s, "
        f"unreadable images replaced: {result.num_replaced}"
    )
    if result.export_dir:
        print(f"hub folder: {result.export_dir}")
    if result.preempted:
        print(f"preempted at step {result.step}: resume with {resume_command(args)}", flush=True)


def _dry_run(recipe: Recipe) -> str:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    eng = recipe.engine
    lines = [recipe.to_json(), ""]
    try:
        micro, accum = eng.batch_layout(world)
    except ValueError as err:
        lines.append(f"ERROR: {err}")
        return "\n".join(lines)
    lines += [
        f"world size            {world}",
        f"per-device batch      {micro}",
        f"accumulation steps    {accum}",
        f"global batch          {eng.global_batch}",
        f"peak lr               {recipe.peak_lr():.6g} ({recipe.optim.lr_schedule})",
    ]
    n = recipe.data.expected_images
    if recipe.data.root.startswith("embedded:") or (
        recipe.data.root and Path(recipe.data.root).is_dir() and not n
    ):
        try:
            root = sdata.resolve_data_root(
                recipe.data.root, sdata.data_cache_dir(recipe.data.cache_dir)
            )
            n = len(sdata.ImageFolderDataset(root, None))
        except (OSError, ValueError, RuntimeError) as err:
            lines.append(f"(could not count images: {err})")
    if n:
        spe = n // eng.global_batch
        lines += [
            f"images                {n}",
            f"iterations per epoch  {spe}",
            f"total iterations      {spe * eng.epochs}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else (logging.INFO if rank == 0 else logging.WARNING),
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    if args.name == "list":
        print("\n".join(list_recipes()))
        return 0
    try:
        recipe = resolve_recipe(args.name, args.data_root, args.overrides, args)
        extra_args = parse_eval_options([*recipe.eval.option_items(), *args.eval_option])
    except (RecipeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(_dry_run(recipe))
        return 0
    if not recipe.data.root:
        print(
            f"error: recipe {recipe.name} trains on ImageNet-1k: pass --data-root DIR "
            "(the train folder, <DIR>/<class>/<image>)",
            file=sys.stderr,
        )
        return 2
    run_dir = Path(args.output_dir) / (args.run_name or recipe.name)
    try:
        hook = periodic_knn(recipe)
        result = train(
            recipe,
            run_dir,
            resume=args.resume,
            dist_timeout_s=args.dist_timeout,
            allow_data_change=args.allow_data_change,
            epoch_hook=hook,
        )
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except PeerLostError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 4
    except (
        CheckpointError,
        RunFolderLockedError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if rank == 0:
        _report(result, args)
    return finish(result, recipe, args, extra_args)


if __name__ == "__main__":
    sys.exit(main())
