"""Export a trained backbone as a hub folder (config.json + model.safetensors + README.md).

At the end of a run the engine calls :func:`export_method`; any checkpoint can be exported later::

    python -m selfsup_zoo.training.export runs/smoke_care            # newest good checkpoint
    python -m selfsup_zoo.training.export runs/smoke_care/checkpoints/step_000000100.pt out/

The architecture written to config.json is timm's own (``resnet50``, ``vit_small_patch16_224``,
...), so the folder loads with plain ``timm.create_model('local-dir:<folder>', pretrained=True)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from torch import nn

from selfsup_zoo import catalog
from selfsup_zoo.convert.loading import is_unsafe_pickle_error, unsafe_checkpoint_error
from selfsup_zoo.hub_folder import HubFolder, write_hub_folder
from selfsup_zoo.training.checkpoint import CheckpointError, find_latest_checkpoint, load_checkpoint
from selfsup_zoo.training.data import build_views
from selfsup_zoo.training.methods import Method
from selfsup_zoo.training.provenance import RunProvenance, export_provenance
from selfsup_zoo.training.recipe import Recipe
from selfsup_zoo.training.state import build_recipe_method

logger = logging.getLogger(__name__)

__all__ = ["export_method", "export_checkpoint", "resolve_architecture", "main"]


def resolve_architecture(recipe: Recipe, backbone: nn.Module) -> tuple[str, dict[str, Any]]:
    """timm architecture name and kwargs for config.json.

    Order: the recipe's ``[export]`` table; the catalog entry the recipe regenerates; the method's
    own ``arch``/``model_args`` config fields; the backbone's timm ``pretrained_cfg``.
    """
    if recipe.export.architecture:
        return recipe.export.architecture, dict(recipe.export.model_args)
    if recipe.checkpoint:
        entry = catalog.get_entry(recipe.checkpoint)
        return entry.timm_arch, dict(entry.model_args)
    cfg = recipe.method.config
    if "arch" in cfg:
        return str(cfg["arch"]), dict(cfg.get("model_args", {}))
    arch = getattr(backbone, "pretrained_cfg", {}).get("architecture")
    if arch:
        return str(arch), dict(recipe.export.model_args)
    raise ValueError(
        f"cannot tell which timm architecture recipe {recipe.name} trains: set export.architecture"
    )


def export_method(
    method: Method, recipe: Recipe, out_dir: str | Path, *, provenance: dict[str, Any]
) -> HubFolder:
    """Write ``method.export_backbone()`` as a hub folder.

    Args:
        method: the trained method.
        recipe: the recipe it was trained with (architecture and data config).
        out_dir: the folder to write.
        provenance: how the weights were made (``training.provenance.export_provenance``).

    Returns:
        The written folder (path and weights sha256).
    """
    backbone = method.export_backbone()
    arch, model_args = resolve_architecture(recipe, backbone)
    return write_hub_folder(
        out_dir,
        backbone.state_dict(),  # write_hub_folder makes CPU, contiguous (not channels_last) copies
        architecture=arch,
        model_args=model_args or None,
        pretrained_cfg=None if recipe.checkpoint else data_cfg(recipe),
        checkpoint=recipe.checkpoint or None,
        provenance=provenance,
    )


def data_cfg(recipe: Recipe) -> dict[str, Any]:
    """Input size, interpolation and normalisation the run trained with, for a checkpoint that is
    not in the catalog (smoke runs at 32 px on digits): timm's data config then evaluates it at the
    resolution it learnt, not at the architecture's default 224 px."""
    # The views object itself says its size and resampling (defaults included).
    views = build_views(recipe.data.views, recipe.data.view_args)
    size = views.output_size
    return {
        "input_size": (3, size, size),
        "mean": tuple(recipe.data.mean),
        "std": tuple(recipe.data.std),
        "crop_pct": 0.875,
        "interpolation": views.interpolation.value,
    }


def export_checkpoint(src: str | Path, out_dir: str | Path | None = None) -> HubFolder:
    """Export from a training checkpoint file, or from a run folder (its newest good checkpoint).

    Args:
        src: a checkpoint file or a run folder.
        out_dir: the folder to write (default: ``<run>/export_step<N>``).

    Returns:
        The written folder.

    Raises:
        CheckpointError: no usable checkpoint.
        UnsafeCheckpointError: the file needs objects that are unsafe to unpickle (the converters'
            refusal).
        RuntimeError: the checkpoint's method state does not match the code's method.
    """
    src = Path(src)
    if src.is_dir():
        found = find_latest_checkpoint(src)
        if found is None:
            raise CheckpointError(f"no usable checkpoint under {src / 'checkpoints'}")
        path, state = found
        run_dir = src
    else:
        try:
            path, state = src, load_checkpoint(src)
        except CheckpointError as err:
            if is_unsafe_pickle_error(err):
                raise unsafe_checkpoint_error(src, err) from None
            raise
        run_dir = src.parent.parent if src.parent.name == "checkpoints" else src.parent
    recipe = Recipe.from_json(state["recipe"])
    method = build_recipe_method(recipe, accum=1)  # accumulation does not change any weight's shape
    missing, unexpected = method.load_state_dict(state["method"], strict=False)
    if missing or unexpected:
        # SyncBatchNorm has the same keys as BatchNorm, so a DDP run's state loads as is; anything
        # else is a real mismatch between the checkpoint and the code.
        raise RuntimeError(
            f"checkpoint {path} does not match the method: missing {missing}, "
            f"unexpected {unexpected}"
        )
    step = int(state["step"])
    provenance = export_provenance(
        recipe,
        RunProvenance.from_checkpoint(state),
        steps=step,
        total_steps=int(state.get("total_steps", step)),
        wall_time_s=float(state.get("wall_time_s", 0.0)),
        source_checkpoint=path.name,
    )
    out = Path(out_dir) if out_dir is not None else run_dir / f"export_step{step}"
    return export_method(method, recipe, out, provenance=provenance)


def main(argv: list[str] | None = None) -> int:
    """The command line: prints ``{"path": ..., "sha256": ...}``; exit status 1 on an error."""
    parser = argparse.ArgumentParser(
        prog="python -m selfsup_zoo.training.export",
        description="Write a hub folder (config.json, model.safetensors, README.md) from a "
        "training checkpoint.",
    )
    parser.add_argument("source", help="a run folder (newest good checkpoint) or a checkpoint file")
    parser.add_argument("out_dir", nargs="?", help="output folder (default: <run>/export_step<N>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        folder = export_checkpoint(args.source, args.out_dir)
    except (OSError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"path": str(folder.path), "sha256": folder.sha256}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
