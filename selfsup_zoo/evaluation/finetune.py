"""``finetune``: SERE's fine-tuning protocol (the MAE code base), run as a job of the engine.

``python -m selfsup_zoo.evaluation finetune MODEL --train DIR --val DIR`` picks the recipe by the
ViT's width (``finetune_vit_small``: iBOT's ViT-S values, ``finetune_vit_base``: SERE/MAE's ViT-B
values; ``--recipe`` for another), trains with the engine (torchrun, AMP, accumulation,
checkpoints, ``--resume auto``), evaluates after the recipe's epochs and reports the best and the
last top-1 / top-5 on ``--val``. The fine-tuned classifier is exported as a hub folder that plain
timm loads (``<out>/export``, ``--no-export`` to skip).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

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
from selfsup_zoo.evaluation.finetune_method import FineTune, FineTuneConfig
from selfsup_zoo.evaluation.probe_export import export_finetuned
from selfsup_zoo.evaluation.registry import ProtocolResult
from selfsup_zoo.evaluation.session import EvalSession
from selfsup_zoo.training.checkpoint import load_checkpoint
from selfsup_zoo.training.data import EvalView
from selfsup_zoo.training.recipe import Recipe, toml_string

logger = logging.getLogger(__name__)

__all__ = ["SUMMARY", "add_arguments", "run"]

SUMMARY = "full fine-tuning (SERE / MAE protocol: layer decay, mixup, cutmix, RandAugment)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The fine-tuning options; unset ones keep the recipe's (paper) values."""
    g = parser.add_argument_group("finetune")
    add_run_arguments(g)
    g.add_argument("--layer-decay", type=float, default=None, help="ViT-B 0.65, ViT-S 0.75")
    g.add_argument("--drop-path", type=float, default=None, help="0.1")
    g.add_argument("--mixup", type=float, default=None, help="0.8")
    g.add_argument("--cutmix", type=float, default=None, help="1.0")
    g.add_argument("--smoothing", type=float, default=None, help="label smoothing 0.1")
    g.add_argument("--aa", default=None, help="auto-augment, rand-m9-mstd0.5-inc1")
    g.add_argument("--reprob", type=float, default=None, help="random erasing 0.25")
    g.add_argument("--warmup-epochs", type=float, default=None, help="5")
    g.add_argument("--weight-decay", type=float, default=None, help="0.05")
    g.add_argument("--no-export", action="store_true", help="do not write the hub folder")


def _recipe_name(model: object) -> str:
    width = int(getattr(model, "embed_dim", 768))
    return "finetune_vit_small" if width <= 384 else "finetune_vit_base"


def _build_recipe(
    args: argparse.Namespace, root: Path, classes: int, transform: EvalTransform, name: str
) -> Recipe:
    o = [
        *common_overrides(args, root, classes),
        f"data.view_args.size={transform.size}",
        f"data.view_args.mean={list(transform.mean)}",
        f"data.view_args.std={list(transform.std)}",
    ]
    optional = {
        "method.layer_decay": args.layer_decay,
        "method.drop_path": args.drop_path,
        "method.mixup": args.mixup,
        "method.cutmix": args.cutmix,
        "method.label_smoothing": args.smoothing,
        "data.view_args.re_prob": args.reprob,
        "optim.base_lr": args.lr,
        "optim.warmup_epochs": args.warmup_epochs,
        "optim.weight_decay": args.weight_decay,
    }
    o += [f"{k}={v}" for k, v in optional.items() if v is not None]
    if args.aa is not None:
        o.append(f"data.view_args.auto_augment={toml_string(args.aa)}")
    return load_job_recipe(recipe_path(name), o, args)


def run(session: EvalSession) -> ProtocolResult | None:
    """Fine-tune on the engine, then report best and last accuracy and export (main process)."""
    args = session.args
    out = session.out_dir() or Path("runs") / "eval" / "finetune"
    train_set, val_set = labelled_folders(session)
    model = session.model()
    transform = EvalTransform.from_model(model)
    if args.img_size:
        t = transform
        transform = EvalTransform(args.img_size, t.crop_pct, t.interpolation, t.mean, t.std)
    name = args.recipe or _recipe_name(model)
    del model  # the engine builds its own
    recipe = _build_recipe(args, train_set.root, len(train_set.classes), transform, name)
    val_set.transform = EvalView(transform.size, transform.crop_pct, transform.interpolation)
    splits: dict[str, Dataset] = {"val": val_set}
    job = run_engine_job(
        session, recipe, splits, transform, out, "fine-tuning options: --lr, --precision"
    )
    if job is None:
        return None
    best = max(job.evaluations, key=lambda r: r["val/model/top1"])
    last = job.evaluations[-1]
    metrics = {
        label: {
            "top1": r["val/model/top1"],
            "top5": r["val/model/top5"],
            "epoch": float(r["epoch"]),
        }
        for label, r in (("best", best), ("last", last))
    }
    details = job.details(transform)
    result = job.result
    if not args.no_export and result.step == result.total_steps:
        assert result.last_checkpoint is not None
        method = FineTune(FineTuneConfig(**recipe.method.config))
        method.load_state_dict(load_checkpoint(result.last_checkpoint)["method"])
        details["export_dir"] = str(export_finetuned(method, transform, out / "export"))
    return ProtocolResult(
        metrics=metrics,
        hyperparameters={"recipe": recipe.to_dict()},
        details=details,
        title=f"finetune  {args.model}{' (random init)' if args.random_init else ''}",
    )
