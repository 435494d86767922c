"""The evaluation protocols, one module each, and the interface a protocol module provides.

A protocol is a module with ``SUMMARY`` (one line for ``--help``), ``add_arguments(parser)`` (its
hyper-parameters, each with the paper's default) and ``run(session) -> ProtocolResult | None``
(``None`` on the non-main processes of a torchrun). Adding one is a module and a row of
:data:`PROTOCOLS`; ``python -m selfsup_zoo.evaluation <name>`` imports only the module asked for,
so protocols that run on the training engine do not slow down the others.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol, cast

from selfsup_zoo.evaluation.session import EvalSession

__all__ = ["COMMANDS", "PROTOCOLS", "ProtocolModule", "ProtocolResult", "load_protocol"]

#: name -> (module, one-line summary). The summary is here so that the top-level help needs no
#: protocol imported.
PROTOCOLS: dict[str, tuple[str, str]] = {
    "knn": (
        "selfsup_zoo.evaluation.knn",
        "weighted k-NN of frozen features (DINO/iBOT: T 0.07, k 10 20 100 200)",
    ),
    "linear": (
        "selfsup_zoo.evaluation.linear",
        "linear probe (CNN: CARE's protocol; ViT: DINO/iBOT's), optionally a grid in one pass",
    ),
    "finetune": (
        "selfsup_zoo.evaluation.finetune",
        "full fine-tuning (SERE / MAE protocol: layer decay, mixup, cutmix, RandAugment)",
    ),
    "features": (
        "selfsup_zoo.evaluation.features",
        "write pooled (or token) embeddings of image folders to safetensors",
    ),
}

#: Subcommands that are not protocols (they evaluate no model): name -> (module, summary). The
#: module has ``main(argv, prog) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "report": (
        "selfsup_zoo.evaluation.report.cli",
        "rebuild a finished run's report.json, report.md, plots and measured model card",
    ),
    "verify": (
        "selfsup_zoo.evaluation.verify",
        "run the final evaluations of a finished reproduce run again (into RUN/eval/)",
    ),
}


@dataclass
class ProtocolResult:
    """What a protocol hands back for results.json and the printed table.

    Attributes:
        metrics: table rows: row label -> column -> value (e.g. ``{"k=20": {"top1": 84.2}}``).
        hyperparameters: every hyper-parameter the protocol used (defaults included).
        details: anything else worth keeping (feature dimension, outputs written, ...).
        title: the table's first line.
    """

    metrics: dict[str, dict[str, float]]
    hyperparameters: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    title: str = ""


class ProtocolModule(Protocol):
    """The attributes :func:`load_protocol` checks a protocol module for."""

    SUMMARY: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, session: EvalSession) -> ProtocolResult | None: ...


def load_protocol(name: str) -> ProtocolModule:
    """Import the module of protocol ``name``.

    Raises:
        KeyError: unknown protocol (the message lists the known ones).
    """
    if name not in PROTOCOLS:
        raise KeyError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    module: ModuleType = importlib.import_module(PROTOCOLS[name][0])
    for attr in ("SUMMARY", "add_arguments", "run"):
        if not hasattr(module, attr):
            raise TypeError(f"protocol module {module.__name__} lacks {attr!r}")
    return cast(ProtocolModule, module)
