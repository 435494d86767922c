"""What the protocols that run on the training engine (``linear``, ``finetune``) share: their
recipes, the class check of the two folders, the command-line options of a run."""

from __future__ import annotations

import argparse
from importlib import resources

from selfsup_zoo.evaluation.model_loading import EvaluationError
from selfsup_zoo.training.data import ImageFolderDataset

__all__ = ["add_run_arguments", "check_same_classes", "recipe_path", "toml_string"]


def recipe_path(name: str) -> str:
    """A recipe of ``selfsup_zoo/evaluation/recipes`` by name, or ``name`` itself if a .toml."""
    if name.endswith(".toml"):
        return name
    return str(resources.files("selfsup_zoo.evaluation") / "recipes" / f"{name}.toml")


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (for ``key=value`` recipe overrides)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


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
