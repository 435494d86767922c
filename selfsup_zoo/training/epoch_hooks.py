"""Work a run does after given epochs (an evaluation), outside the training step.

``train(recipe, run_dir, epoch_hook=hook)`` calls ``hook(method, epoch)`` on every process after
each epoch of :func:`hook_epochs` (1-based: those listed in ``engine.eval_epochs``, and those of the
periodic k-NN, ``eval.knn_every``), before that epoch's checkpoint. The method is
in eval mode and gradients are off during the call, and every RNG stream is put back afterwards,
so a run with a hook trains to the same weights as one without. The main process appends the
returned metrics as one JSON line ``{"epoch", "step", **metrics}`` to ``evaluations.jsonl`` in the
run folder; :func:`read_evaluations` reads them back (a resumed run that repeats an epoch's hook
replaces its line, a line cut short by a crash is ignored).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from selfsup_zoo.training.methods import Method
from selfsup_zoo.training.recipe import Recipe
from selfsup_zoo.training.rng import capture_rng, restore_rng
from selfsup_zoo.training.state import TrainState

logger = logging.getLogger(__name__)

__all__ = [
    "EVALUATIONS_FILE",
    "EpochHook",
    "hook_due",
    "hook_epochs",
    "read_evaluations",
    "run_epoch_hook",
]

EVALUATIONS_FILE = "evaluations.jsonl"

#: ``hook(method, epoch)`` -> metrics (JSON values, the same on every process); ``epoch`` is
#: 1-based.
EpochHook = Callable[[Method, int], dict[str, Any]]


def hook_epochs(recipe: Recipe) -> set[int]:
    """The 1-based epochs after which a run of ``recipe`` calls its epoch hook:
    ``engine.eval_epochs`` and the periodic k-NN's (``EvalConfig.knn_epochs``)."""
    return set(recipe.engine.eval_epochs) | recipe.eval.knn_epochs(recipe.engine.epochs)


def hook_due(state: TrainState) -> bool:
    """Whether the step just finished ends an epoch of :func:`hook_epochs`."""
    spe = state.steps_per_epoch
    return state.step % spe == 0 and state.step // spe in hook_epochs(state.recipe)


def run_epoch_hook(hook: EpochHook, state: TrainState, run_dir: Path) -> dict[str, Any]:
    """Call ``hook`` for the epoch that just ended and record its metrics (see module docstring).

    Returns:
        The hook's metrics.
    """
    epoch = state.step // state.steps_per_epoch
    method = state.method
    was_training = method.training
    rng = capture_rng(state.dist.device)
    method.eval()
    try:
        with torch.no_grad():
            metrics = hook(method, epoch)
    finally:
        method.train(was_training)
        restore_rng(rng, state.dist.device)
    if state.dist.is_main:
        line = json.dumps({"epoch": epoch, "step": state.step, **metrics})
        with (run_dir / EVALUATIONS_FILE).open("a", encoding="utf-8") as f:
            f.write(line + "\n")
        logger.info("epoch %d evaluation: %s", epoch, line)
    return metrics


def read_evaluations(run_dir: str | Path) -> list[dict[str, Any]]:
    """The recorded evaluations of a run, one per epoch (the last record of an epoch wins), in
    epoch order; ``[]`` when there are none."""
    path = Path(run_dir) / EVALUATIONS_FILE
    if not path.is_file():
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if isinstance(record, dict) and "epoch" in record:
            by_epoch[int(record["epoch"])] = record
    return [by_epoch[e] for e in sorted(by_epoch)]
