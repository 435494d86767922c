"""``finetune``: SERE's fine-tuning protocol (the MAE code base), run as a job of the engine.

``python -m selfsup_zoo.evaluation finetune MODEL --train DIR --val DIR`` picks the recipe by the
ViT's width (``finetune_vit_small``: iBOT's ViT-S values, ``finetune_vit_base``: SERE/MAE's ViT-B
values; ``--recipe`` for another), trains with the engine (torchrun, AMP, accumulation,
checkpoints, ``--resume auto``), evaluates after the recipe's epochs and reports the best and the
last top-1 / top-5 on ``--val``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from torch.utils.data import Dataset

from selfsup_zoo.evaluation.engine_jobs import (
    add_run_arguments,
    check_same_classes,
    recipe_path,
    toml_string,
)
from selfsup_zoo.evaluation.extract import EvalTransform
from selfsup_zoo.evaluation.model_loading import EvaluationError
from selfsup_zoo.evaluation.probe_eval import ProbeEvaluator
from selfsup_zoo.evaluation.registry import ProtocolResult
from selfsup_zoo.evaluation.session import EvalSession
from selfsup_zoo.training.data import EvalView
from selfsup_zoo.training.engine import NonFiniteLossError, train
from selfsup_zoo.training.epoch_hooks import read_evaluations
from selfsup_zoo.training.recipe import Recipe, load_recipe

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


def _recipe_name(model: object) -> str:
    width = int(getattr(model, "embed_dim", 768))
    return "finetune_vit_small" if width <= 384 else "finetune_vit_base"


def _build_recipe(
    args: argparse.Namespace, root: Path, classes: int, transform: EvalTransform, name: str
) -> Recipe:
    o = [
        f"method.model={toml_string(args.model)}",
        f"method.random_init={str(bool(args.random_init)).lower()}",
        f"method.model_seed={args.seed}",
        f"method.num_classes={classes}",
        f"data.root={toml_string(str(root))}",
        f"data.workers={args.workers}",
        f"data.strict={str(bool(args.strict)).lower()}",
        f"data.view_args.size={transform.size}",
        f"data.view_args.mean={list(transform.mean)}",
        f"data.view_args.std={list(transform.std)}",
        f"engine.seed={args.seed}",
        f"engine.max_steps={args.max_steps}",
        f"engine.ckpt_every_steps={args.ckpt_every}",
        f"engine.per_device_batch={args.per_device_batch}",
        f"engine.progress={'false' if args.no_progress else 'true'}",
        "engine.tensorboard=false",
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
        "engine.epochs": args.epochs,
        "engine.global_batch": args.global_batch,
    }
    o += [f"{k}={v}" for k, v in optional.items() if v is not None]
    if args.aa is not None:
        o.append(f"data.view_args.auto_augment={toml_string(args.aa)}")
    if args.eval_epochs:
        o.append(f"engine.eval_epochs={[int(v) for v in args.eval_epochs.split(',')]}")
    if args.device != "auto":
        kind = "cuda" if args.device.startswith("cuda") else "cpu"
        o.append(f"engine.device={toml_string(kind)}")
    recipe = load_recipe(recipe_path(name), [*o, *args.override])
    last = recipe.engine.epochs
    recipe.engine.eval_epochs = sorted({e for e in recipe.engine.eval_epochs if e <= last} | {last})
    if args.precision in ("bf16", "fp16"):
        recipe.engine.precision = args.precision
    return recipe


def run(session: EvalSession) -> ProtocolResult | None:
    """Fine-tune on the engine, then report best and last accuracy (main process)."""
    args = session.args
    out = session.out_dir() or Path("runs") / "eval" / "finetune"
    train_set = session.image_folder(args.train, "train")
    val_set = session.image_folder(args.val, "val")
    check_same_classes(train_set, val_set)
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
        raise EvaluationError(f"{err} (fine-tuning options: --lr, --precision)") from err
    if not session.is_main:
        return None
    evaluations = read_evaluations(run_dir)
    if not evaluations:
        raise EvaluationError(f"no evaluation ran (stopped at step {result.step}): resume the run")
    best = max(evaluations, key=lambda r: r["val/model/top1"])
    last = evaluations[-1]
    metrics = {
        label: {
            "top1": r["val/model/top1"],
            "top5": r["val/model/top5"],
            "epoch": float(r["epoch"]),
        }
        for label, r in (("best", best), ("last", last))
    }
    if result.step < result.total_steps:
        session.notes.append(f"stopped at step {result.step} of {result.total_steps}")
    return ProtocolResult(
        metrics=metrics,
        hyperparameters={"recipe": recipe.to_dict()},
        details={
            "run_dir": str(run_dir),
            "evaluations": evaluations,
            "train_wall_time_s": result.wall_time_s,
            "images_per_s": result.images_per_s,
            "eval_transform": transform.as_dict(),
        },
        title=f"finetune  {args.model}{' (random init)' if args.random_init else ''}",
    )
