"""``python -m selfsup_zoo.evaluation <protocol> MODEL ...``: one command line for every protocol.

``python -m selfsup_zoo.evaluation`` alone (or ``--help``) lists the protocols;
``python -m selfsup_zoo.evaluation <protocol> --help`` lists a protocol's options;
``python -m selfsup_zoo.evaluation verify RUN`` runs the final evaluations of a ``reproduce`` run
again (:mod:`selfsup_zoo.evaluation.verify`).
"""

from __future__ import annotations

import importlib
import sys

from selfsup_zoo.errors import closest
from selfsup_zoo.evaluation.cli import run_protocol
from selfsup_zoo.evaluation.registry import COMMANDS, PROTOCOLS

_PROG = "python -m selfsup_zoo.evaluation"


def _usage() -> str:
    width = max(len(n) for n in (*PROTOCOLS, *COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in PROTOCOLS.items())
    other = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    return (
        f"usage: {_PROG} <protocol> MODEL [--train DIR --val DIR] [--out DIR] [options]\n"
        f"       {_PROG} report RUN_FOLDER\n"
        f"       {_PROG} verify RUN [--train DIR --val DIR] [--eval knn|linear|finetune|all]\n\n"
        f"protocols:\n{rows}\n\nother commands:\n{other}\n\n"
        f"MODEL: a timm or zoo name, local-dir:<hub folder> or hf-hub:<repo> (--random-init for "
        f"the untrained baseline).\nOptions of a protocol: {_PROG} <protocol> --help"
    )


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the protocol named first; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name = args[0]
    if name in COMMANDS:
        command = importlib.import_module(COMMANDS[name][0])
        status: int = command.main(args[1:], prog=f"{_PROG} {name}")
        return status
    if name not in PROTOCOLS:
        close = closest(name, [*PROTOCOLS, *COMMANDS], n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"error: unknown protocol {name!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    code, _ = run_protocol(name, args[1:], prog=f"{_PROG} {name}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
