"""What every protocol shares: the common command-line options and one evaluation session
(processes, device, data folders, the model, cached feature extraction)."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup_zoo.evaluation.extract import (
    PRECISIONS,
    EvalTransform,
    FeatureSet,
    extract_features_of,
    open_image_folder,
)
from selfsup_zoo.evaluation.feature_cache import (
    feature_cache_dir,
    feature_key,
    load_features,
    save_features,
    weights_sha256,
)
from selfsup_zoo.evaluation.model_loading import EvaluationError, create_eval_model
from selfsup_zoo.training import dist as tdist
from selfsup_zoo.training.data import ImageFolderDataset, data_cache_dir, resolve_data_root

logger = logging.getLogger(__name__)

__all__ = ["EvalSession", "add_common_arguments"]


def add_common_arguments(parser: argparse.ArgumentParser, *, splits: bool = True) -> None:
    """The options of every protocol: the model, the folders, where to write, how to run.

    Args:
        parser: the protocol's parser.
        splits: add ``--train``/``--val`` (required).
    """
    parser.add_argument(
        "model", help="timm or zoo model name, local-dir:<hub folder> or hf-hub:<repo>"
    )
    if splits:
        parser.add_argument(
            "--train",
            required=True,
            help="image folder root/<class>/<image> (or embedded:digits@SIZE/train)",
        )
        parser.add_argument("--val", required=True, help="image folder of the evaluation split")
    parser.add_argument("--out", default=None, help="folder for results.json (and outputs)")
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N"
    )
    parser.add_argument("--random-init", action="store_true", help="do not load weights (baseline)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="torch seed set before the model is built (makes --random-init repeatable) and of "
        "any random draw of the protocol",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward per process")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", *PRECISIONS),
        help="auto: bf16 autocast on CUDA, fp32 elsewhere",
    )
    parser.add_argument(
        "--strict", action="store_true", help="stop on the first unreadable image (default: skip)"
    )
    parser.add_argument(
        "--cache-dir",
        default="",
        help="where embedded:... data sets are materialised "
        "(default $SELFSUP_ZOO_CACHE/data or ~/.cache/selfsup_zoo/data)",
    )
    parser.add_argument(
        "--feature-cache-dir",
        default="",
        help="where extracted features are cached (default <cache root>/features)",
    )
    parser.add_argument(
        "--no-feature-cache", action="store_true", help="extract again and cache nothing"
    )


def _start_processes(device_arg: str) -> tuple[tdist.DistInfo, torch.device]:
    if device_arg == "auto":
        info = tdist.init_distributed("auto")
        return info, info.device
    try:
        device = torch.device(device_arg)
    except RuntimeError as err:
        raise EvaluationError(f"--device {device_arg!r} is not a device: {err}") from err
    info = tdist.init_distributed("cuda" if device.type == "cuda" else "cpu")
    return info, (info.device if info.distributed else device)


@dataclass
class EvalSession:
    """One protocol run: processes and device from the options, plus shared helpers.

    Attributes:
        args: the parsed options (:func:`add_common_arguments` and the protocol's).
        info: the process group (a single process outside torchrun).
        device: where models run.
        precision: the resolved precision ("fp32", "bf16", "fp16").
        notes: remarks collected for results.json (clipped k, skipped images, ...).
        cache_events: per split, whether its features came from the cache ("hit"/"miss"/"off").
        extraction: per split, images and seconds of the extraction that ran.
    """

    args: argparse.Namespace
    info: tdist.DistInfo
    device: torch.device
    precision: str
    notes: list[str] = field(default_factory=list)
    cache_events: dict[str, str] = field(default_factory=dict)
    extraction: dict[str, dict[str, float]] = field(default_factory=dict)
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def start(cls, args: argparse.Namespace) -> EvalSession:
        info, device = _start_processes(args.device)
        precision = args.precision
        if precision == "auto":
            precision = "bf16" if device.type == "cuda" else "fp32"
        return cls(args=args, info=info, device=device, precision=precision)

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    def model(self) -> nn.Module:
        """The model named on the command line (``--random-init``, ``--seed`` honoured)."""
        return create_eval_model(
            self.args.model, random_init=self.args.random_init, seed=self.args.seed
        )

    def image_folder(self, spec: str, option: str) -> ImageFolderDataset:
        """Resolve ``spec`` (a folder or ``embedded:...``) and scan it (before any model is built,
        so that a wrong folder fails fast); :meth:`features` sets its evaluation view.

        Args:
            spec: the option's value.
            option: its name (``train``), quoted in errors.
        """
        try:
            root = resolve_data_root(spec, data_cache_dir(self.args.cache_dir))
            dataset = open_image_folder(str(root), None, strict=self.args.strict)
        except (OSError, ValueError) as err:
            raise EvaluationError(f"--{option}: {err}") from err
        self.fingerprints[option] = {
            "root": str(dataset.root),
            "fingerprint": dataset.fingerprint(),
            "images": len(dataset),
            "classes": len(dataset.classes),
        }
        return dataset

    def features(
        self,
        model: nn.Module,
        dataset: ImageFolderDataset,
        transform: EvalTransform,
        split: str,
        *,
        tokens: bool = False,
        cache: bool = True,
    ) -> FeatureSet | None:
        """Features of ``dataset``, from the cache when an entry matches, else extracted (on every
        rank) and stored. Returns the :class:`FeatureSet` on the main process, ``None`` elsewhere.
        """
        args = self.args
        use_cache = cache and not args.no_feature_cache
        folder = feature_cache_dir(args.feature_cache_dir or None)
        key, description = "", dict[str, Any]()
        hit: FeatureSet | None = None
        if use_cache and self.is_main:
            key, description = feature_key(
                weights=weights_sha256(model),
                model=model,
                transform=transform,
                fingerprint=self.fingerprints[split]["fingerprint"],
                tokens=tokens,
                precision=self.precision,
            )
            hit = load_features(folder, key)
        found = bool(tdist.broadcast_object(hit is not None, self.info))
        self.cache_events[split] = "off" if not use_cache else ("hit" if found else "miss")
        if found:
            return hit
        dataset.transform = transform.view()
        result = extract_features_of(
            model,
            dataset,
            transform,
            tokens=tokens,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=self.device,
            precision=self.precision,
            info=self.info,
            progress=self.is_main,
        )
        if result is None:
            return None
        self.extraction[split] = {
            "images": float(len(dataset)),
            "seconds": result.seconds,
            "images_per_s": len(dataset) / max(result.seconds, 1e-9),
        }
        if result.num_skipped:
            self.notes.append(f"--{split}: {result.num_skipped} unreadable images skipped")
        if use_cache:
            save_features(folder, key, result, description)
        return result

    def out_dir(self) -> Path | None:
        """``--out`` as a path (``None`` when not given)."""
        return Path(self.args.out).expanduser() if self.args.out else None
