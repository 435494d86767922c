"""What the protocols that run on the training engine (``linear``, ``finetune``) share: their
recipes and the overrides every run gets, the class check of the two folders, the command-line
options of a run, and the run itself (engine call, NaN stop as a clear error, evaluation records).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from selfsup_zoo.evaluation.extract import EvalTransform
from selfsup_zoo.evaluation.model_loading import EvaluationError
from selfsup_zoo.evaluation.probe_eval import ProbeEvaluator
from selfsup_zoo.evaluation.session import EvalSession
from selfsup_zoo.training.data import ImageFolderDataset
from selfsup_zoo.training.engine import NonFiniteLossError, RunResult, train
from selfsup_zoo.training.epoch_hooks import read_evaluations
from selfsup_zoo.training.recipe import Recipe, load_recipe, toml_string

__all__ = [
    "EngineJob",
    "add_run_arguments",
    "check_same_classes",
    "common_overrides",
    "labelled_folders",
    "load_job_recipe",
    "recipe_path",
    "run_engine_job",
]


def recipe_path(name: str) -> str:
    """A recipe of ``selfsup_zoo/evaluation/recipes`` by name, or ``name`` itself if a .toml."""
    if name.endswith(".toml"):
        return name
    return str(resources.files("selfsup_zoo.evaluation") / "recipes" / f"{name}.toml")


def check_same_classes(train: ImageFolderDataset, val: ImageFolderDataset) -> None:
    """Raise :class:`EvaluationError` unless both folders have the same class sub-folders."""
    unknown = sorted(set(val.classes) - set(train.classes))
    if unknown:
        raise EvaluationError(
            f"--val has classes the training folder lacks: {unknown[:5]}; both folders need the "
            "same class sub-folders"
        )
    if val.classes != train.classes:
        missing = sorted(set(train.classes) - set(val.classes))[:5]
        raise EvaluationError(
            f"--val lacks training classes {missing}: both folders need the same class sub-folders"
        )


def labelled_folders(session: EvalSession) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """The ``--train`` and ``--val`` folders, checked to have the same classes."""
    train_set = session.image_folder(session.args.train, "train")
    val_set = session.image_folder(session.args.val, "val")
    check_same_classes(train_set, val_set)
    return train_set, val_set


def add_run_arguments(group: argparse._ArgumentGroup) -> None:
    """Where the engine's run lives and how it is driven."""
    group.add_argument("--recipe", default="", help="recipe name or .toml (default: by family)")
    group.add_argument("--epochs", type=int, default=None, help="(default: the recipe's)")
    group.add_argument("--lr", type=float, default=None, help="lr per 256 images")
    group.add_argument("--global-batch", type=int, default=None, help="images per optimizer step")
    group.add_argument("--per-device-batch", type=int, default=0, help="0 = global / processes")
    group.add_argument("--eval-epochs", default="", help="comma list (default: the recipe's)")
    group.add_argument("--img-size", type=int, default=0, help="crop side (default: model's cfg)")
    group.add_argument("--run-dir", default="", help="engine run folder (default <out>/run)")
    group.add_argument("--resume", default=None, help="auto, or a checkpoint path")
    group.add_argument("--max-steps", type=int, default=0, help="stop this session after N steps")
    group.add_argument("--ckpt-every", type=int, default=0, help="checkpoint every N steps")
    group.add_argument("--override", action="append", default=[], help="recipe key.path=value")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def common_overrides(args: argparse.Namespace, root: Path, classes: int) -> list[str]:
    """The recipe overrides of every engine job: model, classes, folder, seed, run control."""
    o = [
        f"method.model={toml_string(args.model)}",
        f"method.random_init={str(bool(args.random_init)).lower()}",
        f"method.model_seed={args.seed}",
        f"method.num_classes={classes}",
        f"data.root={toml_string(str(root))}",
        f"data.workers={args.workers}",
        f"data.strict={str(bool(args.strict)).lower()}",
        f"engine.seed={args.seed}",
        f"engine.max_steps={args.max_steps}",
        f"engine.ckpt_every_steps={args.ckpt_every}",
        f"engine.per_device_batch={args.per_device_batch}",
        f"engine.progress={'false' if args.no_progress else 'true'}",
        "engine.tensorboard=false",
    ]
    if args.epochs is not None:
        o.append(f"engine.epochs={args.epochs}")
    if args.global_batch is not None:
        o.append(f"engine.global_batch={args.global_batch}")
    if args.eval_epochs:
        o.append(f"engine.eval_epochs={[int(v) for v in args.eval_epochs.split(',')]}")
    if args.device != "auto":
        kind = "cuda" if args.device.startswith("cuda") else "cpu"
        o.append(f"engine.device={toml_string(kind)}")
    return o


def load_job_recipe(path: str, overrides: list[str], args: argparse.Namespace) -> Recipe:
    """The recipe with ``overrides`` then the user's ``--override``; evaluated at the recipe's
    epochs up to the last one and at the last one; ``--precision`` bf16 / fp16 applied."""
    recipe = load_recipe(path, [*overrides, *args.override])
    last = recipe.engine.epochs
    recipe.engine.eval_epochs = sorted({e for e in recipe.engine.eval_epochs if e <= last} | {last})
    if args.precision in ("bf16", "fp16"):
        recipe.engine.precision = args.precision
    return recipe


@dataclass(frozen=True)
class EngineJob:
    """How an engine job ended (main process): the engine's result, the run folder and the
    evaluation records (one per evaluated epoch, ``selfsup_zoo.training.epoch_hooks``)."""

    result: RunResult
    run_dir: Path
    evaluations: list[dict[str, Any]]

    def details(self, transform: EvalTransform) -> dict[str, Any]:
        """The ``details`` every engine job writes to results.json."""
        return {
            "run_dir": str(self.run_dir),
            "evaluations": self.evaluations,
            "train_wall_time_s": self.result.wall_time_s,
            "images_per_s": self.result.images_per_s,
            "eval_transform": transform.as_dict(),
        }


def run_engine_job(
    session: EvalSession,
    recipe: Recipe,
    splits: dict[str, Dataset],
    transform: EvalTransform,
    out: Path,
    hint: str,
) -> EngineJob | None:
    """Train ``recipe`` on the engine, evaluating ``splits`` at its epochs (every process).

    Args:
        session: the evaluation session (options, process group).
        recipe: the job's recipe.
        splits: split name -> labelled data set of evaluation views.
        transform: the evaluation transform (normalisation of the splits).
        out: the protocol's output folder (the run goes to ``--run-dir`` or ``<out>/run``).
        hint: the options to try after a non-finite loss, for the error message.

    Returns:
        The finished job on the main process, None on the others.

    Raises:
        EvaluationError: a non-finite loss, or a run that stopped before any evaluation.
    """
    args = session.args
    evaluator = ProbeEvaluator(
        splits,
        tuple(transform.mean),
        tuple(transform.std),
        args.batch_size,
        args.workers,
        recipe.engine.precision,
        session.info,
    )
    run_dir = Path(args.run_dir) if args.run_dir else out / "run"
    try:
        result = train(recipe, run_dir, resume=args.resume, epoch_hook=evaluator)
    except NonFiniteLossError as err:
        raise EvaluationError(f"{err} ({hint})") from err
    if not session.is_main:
        return None
    if result.step < result.total_steps:
        session.notes.append(f"stopped at step {result.step} of {result.total_steps}")
    evaluations = read_evaluations(run_dir)
    if not evaluations:
        raise EvaluationError(f"no evaluation ran (stopped at step {result.step}): resume the run")
    return EngineJob(result, run_dir, evaluations)
