"""Checks that a checkpoint belongs to the run resuming from it, done before anything is written.

* :func:`check_same_recipe`: a checkpoint of another recipe or method is refused with both names.
* :class:`DataIdentity` / :func:`check_same_data`: the image folder's fingerprint (class names,
  relative paths and sizes) is stored in every checkpoint; a resume on a folder whose images were
  added, removed, renamed or rewritten is refused with both fingerprints and image counts, unless
  the caller allows it. Checkpoints written before the fingerprint was stored resume with a warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from selfsup_zoo.training.checkpoint import CheckpointError
from selfsup_zoo.training.data import ImageFolderDataset
from selfsup_zoo.training.data.holdout import IndexSubset
from selfsup_zoo.training.recipe import Recipe

logger = logging.getLogger(__name__)

__all__ = ["DATA_KEY", "DataIdentity", "check_same_recipe", "check_same_data"]

DATA_KEY = "data"  # checkpoint key of the DataIdentity dict


@dataclass(frozen=True)
class DataIdentity:
    """What identifies a run's training images: the folder's fingerprint, image count and root."""

    fingerprint: str  # ImageFolderDataset.fingerprint(): sha256 hex
    images: int
    root: str

    @classmethod
    def of(cls, dataset: ImageFolderDataset | IndexSubset) -> DataIdentity:
        """The identity of ``dataset`` now (one ``stat`` per image)."""
        return cls(dataset.fingerprint(), len(dataset), str(dataset.root))

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> DataIdentity | None:
        """The identity stored in a checkpoint, None for one written before it was stored."""
        stored = state.get(DATA_KEY)
        if not isinstance(stored, dict):
            return None
        return cls(str(stored["fingerprint"]), int(stored["images"]), str(stored["root"]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_same_recipe(state: dict[str, Any], source: Path, recipe: Recipe) -> None:
    """Refuse a checkpoint of another recipe or method.

    Args:
        state: the checkpoint (``load_checkpoint``).
        source: its file, for the message.
        recipe: the recipe of the run that wants to resume.

    Raises:
        CheckpointError: the recipe name or the method kind differ; the message names both.
    """
    saved = json.loads(state["recipe"])
    name = str(saved.get("name", ""))
    kind = str(saved.get("method", {}).get("kind", ""))
    if name != recipe.name or kind != recipe.method.kind:
        raise CheckpointError(
            f"checkpoint {source} is of recipe {name!r} (method {kind!r}), but this run is recipe "
            f"{recipe.name!r} (method {recipe.method.kind!r}): resume it with its own recipe, or "
            "start this one without --resume in another run folder"
        )


def check_same_data(
    state: dict[str, Any], source: Path, current: DataIdentity, *, allow_change: bool
) -> None:
    """Refuse a resume on a data folder that changed since the checkpoint was written.

    Args:
        state: the checkpoint.
        source: its file, for the message.
        current: the identity of the run's data folder now.
        allow_change: log a warning instead of refusing (``--allow-data-change``).

    Raises:
        CheckpointError: the fingerprints differ and ``allow_change`` is False.
    """
    saved = DataIdentity.from_checkpoint(state)
    if saved is None:
        logger.warning(
            "checkpoint %s predates data fingerprints: cannot check that the data folder %s "
            "(%d images) is the one it was trained on",
            source,
            current.root,
            current.images,
        )
        return
    if saved.fingerprint == current.fingerprint:
        return
    what = (
        f"the data folder changed since checkpoint {source} was written: it was {saved.root} "
        f"with {saved.images} images (fingerprint {saved.fingerprint[:16]}...), it is now "
        f"{current.root} with {current.images} images (fingerprint {current.fingerprint[:16]}...)"
    )
    if allow_change:
        logger.warning("%s; going on as --allow-data-change asks", what)
        return
    raise CheckpointError(
        f"{what}. Restore the images the run was started on, or pass --allow-data-change to "
        "resume on the new folder anyway (the schedules keep the old length only if the number "
        "of steps per epoch is unchanged)"
    )
