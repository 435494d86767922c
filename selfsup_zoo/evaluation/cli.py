"""Run one protocol from the command line: parse, evaluate, write results.json, print the table.

Errors caused by the input (a wrong model name, a missing or empty folder, an unreadable image
with ``--strict``, a validation class unknown to the training folder) end with one ``error:``
line that says what to do and exit status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from selfsup_zoo.catalog import UnknownNameError
from selfsup_zoo.errors import ZooError
from selfsup_zoo.evaluation.registry import ProtocolModule, ProtocolResult, load_protocol
from selfsup_zoo.evaluation.results import format_table, software_versions, write_results
from selfsup_zoo.evaluation.session import EvalSession, add_common_arguments
from selfsup_zoo.training import dist as tdist
from selfsup_zoo.training.data import CorruptImageError

logger = logging.getLogger(__name__)

__all__ = ["build_parser", "default_out_dir", "run_protocol"]

#: Exceptions that mean bad input rather than a bug: reported in one line, exit status 2.
_INPUT_ERRORS = (ValueError, OSError, CorruptImageError, ZooError, UnknownNameError)


def build_parser(module: ProtocolModule, prog: str) -> argparse.ArgumentParser:
    """The common options plus the protocol's own."""
    parser = argparse.ArgumentParser(prog=prog, description=module.SUMMARY)
    add_common_arguments(parser, splits=getattr(module, "NEEDS_SPLITS", True))
    module.add_arguments(parser)
    return parser


def default_out_dir(protocol: str, model: str, random_init: bool) -> Path:
    """``runs/eval/<model>/<protocol>`` (``<model>-random-init`` for the baseline)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"
    return Path("runs") / "eval" / (slug + ("-random-init" if random_init else "")) / protocol


def _assemble(
    name: str, session: EvalSession, result: ProtocolResult, seconds: float
) -> dict[str, Any]:
    args = session.args
    return {
        "protocol": name,
        "model": args.model,
        "random_init": bool(args.random_init),
        "seed": args.seed,
        "metrics": result.metrics,
        "hyperparameters": result.hyperparameters,
        "run": {
            "device": str(session.device),
            "world_size": session.info.world_size,
            "precision": session.precision,
            "batch_size_per_process": args.batch_size,
            "workers": args.workers,
            "strict": bool(args.strict),
        },
        "data": session.fingerprints,
        "feature_cache": session.cache_events,
        "extraction": session.extraction,
        "details": result.details,
        "notes": session.notes,
        "versions": software_versions(),
        "wall_time_s": seconds,
    }


def run_protocol(
    protocol: str | ProtocolModule,
    argv: list[str] | None,
    *,
    prog: str,
    name: str = "",
    defaults: dict[str, Any] | None = None,
    out_by_default: bool = True,
    print_table: bool = True,
) -> tuple[int, dict[str, Any] | None]:
    """Parse ``argv``, run the protocol, write ``results.json`` and print its table.

    Args:
        protocol: a name of :data:`~selfsup_zoo.evaluation.registry.PROTOCOLS` or the module.
        argv: the arguments after the protocol name.
        prog: program name for usage lines.
        name: the protocol's name in results.json (default: ``protocol`` when it is a name).
        defaults: option defaults that replace the protocol's (``python -m ...knn`` keeps k 20).
        out_by_default: without ``--out``, write under :func:`default_out_dir`; else write
            results.json only when ``--out`` is given.
        print_table: print the table (the legacy knn command prints JSON instead).

    Returns:
        (exit status, results.json content or ``None`` on other ranks and on errors).
    """
    module = load_protocol(protocol) if isinstance(protocol, str) else protocol
    if not name:
        if not isinstance(protocol, str):
            raise TypeError("run_protocol needs name= when given a protocol module")
        name = protocol
    parser = build_parser(module, prog)
    if defaults:
        parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    session: EvalSession | None = None
    try:
        session = EvalSession.start(args)
        if not session.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        if args.out is None and out_by_default:
            args.out = str(default_out_dir(name, args.model, args.random_init))
        result = module.run(session)
        if result is None:
            tdist.barrier(session.info)
            return 0, None
        results = _assemble(name, session, result, time.perf_counter() - start)
        path = write_results(Path(args.out).expanduser(), results) if args.out else None
        tdist.barrier(session.info)
    except _INPUT_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2, None
    finally:
        tdist.cleanup()
    if print_table:
        print(format_table(result.title or f"{name} {args.model}", result.metrics))
        if path is not None:
            print(f"results: {path}")
    return 0, results
