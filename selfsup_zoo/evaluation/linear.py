"""``linear``: the papers' linear probes, run as a job of the training engine.

``python -m selfsup_zoo.evaluation linear MODEL --train DIR --val DIR [--val-split 0.1]
[--grid-lrs 0.05,0.1,0.2] [--variants cls4,cls1+avg]`` picks the family's protocol (CNN: CARE's,
recipe ``linear_care``; ViT: DINO/iBOT's, ``linear_vit``), trains the head(s) with the engine
(torchrun, AMP, checkpoints, ``--resume auto``), evaluates after the recipe's epochs and reports
the paper's number (best top-1 over those evaluations), the last epoch's and, with ``--val-split``,
the head and epoch chosen on the split carved from the training folder. A ``pool`` head is exported
as a hub folder (BatchNorm folded into timm's classifier) that plain timm loads.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from selfsup_zoo.evaluation.engine_jobs import (
    add_run_arguments,
    common_overrides,
    labelled_folders,
    load_job_recipe,
    recipe_path,
    run_engine_job,
)
from selfsup_zoo.evaluation.extract import EvalTransform
from selfsup_zoo.evaluation.linear_probe import LinearProbe, LinearProbeConfig
from selfsup_zoo.evaluation.probe_export import export_probe
from selfsup_zoo.evaluation.probe_features import family_of
from selfsup_zoo.evaluation.registry import ProtocolResult
from selfsup_zoo.evaluation.session import EvalSession
from selfsup_zoo.training.checkpoint import load_checkpoint
from selfsup_zoo.training.data import EvalView, ImageFolderDataset
from selfsup_zoo.training.data.holdout import IndexSubset, stratified_holdout
from selfsup_zoo.training.recipe import Recipe, load_recipe

logger = logging.getLogger(__name__)

__all__ = ["SUMMARY", "add_arguments", "run", "summarize"]

SUMMARY = "linear probe of frozen features (CNN: CARE's protocol; ViT: DINO/iBOT's), grid optional"


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The probe's hyper-parameters; unset ones keep the recipe's (paper) values."""
    g = parser.add_argument_group("linear")
    add_run_arguments(g)
    g.add_argument("--val-split", type=float, default=0.0, help="fraction carved from --train")
    g.add_argument("--grid-lrs", default="", help="comma list of lrs per 256: a grid of heads")
    g.add_argument("--variants", default="", help="comma list: pool, cls<n>, cls<n>+avg")
    g.add_argument("--no-export", action="store_true", help="do not write the hub folder")


def _eval_transform(model: Any, family: str, size: int) -> EvalTransform:
    """The model's cfg; a 224-px CNN gets CARE's Resize 256 + CenterCrop 224 bilinear."""
    t = EvalTransform.from_model(model)
    if size:
        t = EvalTransform(size, t.crop_pct, t.interpolation, t.mean, t.std)
    if family == "cnn" and t.size == 224:
        t = EvalTransform(224, 0.875, "bilinear", t.mean, t.std)
    return t


def _build_recipe(
    args: argparse.Namespace, root: Path, classes: int, transform: EvalTransform, family: str
) -> Recipe:
    name = args.recipe or ("linear_care" if family == "cnn" else "linear_vit")
    path = recipe_path(name)
    base = load_recipe(path)
    lr = args.lr if args.lr is not None else base.optim.base_lr
    grid = _floats(args.grid_lrs) or [lr]
    o = [
        *common_overrides(args, root, classes),
        f"method.lr_scales={[v / lr for v in grid]}",
        f"data.mean={list(transform.mean)}",
        f"data.std={list(transform.std)}",
        f"data.view_args.size={transform.size}",
        f"data.holdout={args.val_split}",
        f"data.holdout_seed={args.seed}",
        f"optim.base_lr={lr}",
    ]
    if args.variants:
        o.append(f"method.variants={json.dumps([v.strip() for v in args.variants.split(',')])}")
    return load_job_recipe(path, o, args)


def summarize(
    evaluations: list[dict[str, Any]], keys: list[str], selection: str
) -> tuple[dict[str, dict[str, float]], str]:
    """Result rows from the evaluation records, and the chosen head.

    The head is chosen on ``selection`` (``holdout`` when a split was carved, else ``val``) at the
    last epoch; ``best (paper)`` is its best val top-1 over the evaluated epochs, ``last`` the last
    epoch's, ``selected`` the val top-1 at the epoch that was best on the holdout.
    """
    final = evaluations[-1]
    chosen = max(keys, key=lambda k: final[f"{selection}/{k}/top1"])
    best = max(evaluations, key=lambda r: r[f"val/{chosen}/top1"])
    rows = {
        "best (paper)": {
            "top1": best[f"val/{chosen}/top1"],
            "top5": best[f"val/{chosen}/top5"],
            "epoch": float(best["epoch"]),
        },
        "last": {
            "top1": final[f"val/{chosen}/top1"],
            "top5": final[f"val/{chosen}/top5"],
            "epoch": float(final["epoch"]),
        },
    }
    if selection == "holdout":
        picked = max(evaluations, key=lambda r: r[f"holdout/{chosen}/top1"])
        rows["selected on holdout"] = {
            "top1": picked[f"val/{chosen}/top1"],
            "top5": picked[f"val/{chosen}/top5"],
            "epoch": float(picked["epoch"]),
        }
    if len(keys) > 1:
        for k in keys:
            rows[k] = {
                "top1": final[f"val/{k}/top1"],
                **({"holdout_top1": final[f"holdout/{k}/top1"]} if selection == "holdout" else {}),
            }
    return rows, chosen


def run(session: EvalSession) -> ProtocolResult | None:
    """Train the probe on the engine, then summarise and export (main process)."""
    args = session.args
    out = session.out_dir() or Path("runs") / "eval" / "linear"
    train_set, val_set = labelled_folders(session)
    model = session.model()
    family = family_of(model)
    transform = _eval_transform(model, family, args.img_size)
    del model  # the engine builds the probe's own copy
    recipe = _build_recipe(args, train_set.root, len(train_set.classes), transform, family)
    view = EvalView(transform.size, transform.crop_pct, transform.interpolation)
    val_set.transform = view
    splits: dict[str, Dataset] = {"val": val_set}
    if args.val_split > 0:
        whole = ImageFolderDataset(train_set.root, view, seed=args.seed, strict=args.strict)
        _, held = stratified_holdout(whole.targets, args.val_split, args.seed)
        splits["holdout"] = IndexSubset(whole, held)
    job = run_engine_job(
        session, recipe, splits, transform, out, "probe options: --lr, --precision fp32"
    )
    if job is None:
        return None
    result, evaluations = job.result, job.evaluations
    assert result.last_checkpoint is not None
    probe = LinearProbe(LinearProbeConfig(**recipe.method.config))
    probe.load_state_dict(load_checkpoint(result.last_checkpoint)["method"])
    diverged = probe.diverged()
    keys = [s.key for s in probe.head_specs if s.key not in diverged]
    metrics, chosen = summarize(evaluations, keys, "holdout" if args.val_split > 0 else "val")
    for key, step in diverged.items():
        metrics[key] = {"diverged_at_step": float(step)}
        session.notes.append(f"head {key} diverged (non-finite loss) at step {step}: dropped")
    details: dict[str, Any] = {
        **job.details(transform),
        "chosen_head": chosen,
        "heads": {
            s.key: {
                "variant": s.variant,
                "lr_scale": s.lr_scale,
                **({"diverged_at_step": diverged[s.key]} if s.key in diverged else {}),
            }
            for s in probe.head_specs
        },
        "diverged": diverged,
    }
    spec = next(s for s in probe.head_specs if s.key == chosen)
    if not args.no_export and spec.variant == "pool" and result.step == result.total_steps:
        details["export_dir"] = str(export_probe(probe, chosen, transform, out / "export"))
    return ProtocolResult(
        metrics=metrics,
        hyperparameters={"recipe": recipe.to_dict(), "family": family},
        details=details,
        title=f"linear ({family})  {args.model}{' (random init)' if args.random_init else ''}",
    )
