"""``python -m selfsup_zoo.cards [--check] [--root DIR]``: regenerate or check generated files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from selfsup_zoo import catalog

from .zoo_table import REGENERATE_COMMAND, drifted, write


def _default_root() -> Path:
    return Path(__file__).resolve().parents[2]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selfsup_zoo.cards",
        description="Regenerate model_cards/ and the README zoo table from the catalog.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 and list the files that drifted"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=_default_root(),
        help="repository root holding README.md (default: this checkout)",
    )
    args = parser.parse_args(argv)
    root: Path = args.root
    if not (root / "README.md").is_file():
        print(f"error: {root} has no README.md; pass --root <repository checkout>", file=sys.stderr)
        return 2
    if args.check:
        problems = drifted(root)
        for problem in problems:
            print(problem)
        if problems:
            print(
                f"{len(problems)} generated file(s) out of date: run `{REGENERATE_COMMAND}`",
                file=sys.stderr,
            )
            return 1
        print(
            f"model cards and README zoo table match the catalog ({len(catalog.CATALOG)} "
            "checkpoints)"
        )
        return 0
    changed = write(root)
    for path in changed:
        print(
            f"wrote {path.relative_to(root)}"
            if path.exists()
            else f"removed {path.relative_to(root)}"
        )
    print(f"{len(changed)} file(s) changed, {len(catalog.CATALOG)} checkpoints in the catalog")
    return 0
