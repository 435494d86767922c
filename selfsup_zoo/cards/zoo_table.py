"""The README's zoo table and the generated files under a checkout: render, check, write."""

from __future__ import annotations

from pathlib import Path

from selfsup_zoo import catalog

from .model_card import render_model_card
from .vocabulary import result_summary

#: Folder of the generated cards and the markers around the generated part of the README.
CARDS_DIR = "model_cards"
TABLE_START = "<!-- zoo-table:start -->"
TABLE_END = "<!-- zoo-table:end -->"
REGENERATE_COMMAND = "python -m selfsup_zoo.cards"


def render_zoo_table() -> str:
    """The README's zoo section (between the markers): one row per catalog checkpoint."""
    lines = [
        TABLE_START,
        "## Model zoo",
        "",
        f"Generated from `selfsup_zoo/catalog.py` by `{REGENERATE_COMMAND}`; do not edit by hand. "
        "Results are the ones the papers' authors report, with the protocol in brackets "
        "(*IN-1k linear*: linear evaluation of the frozen backbone; *IN-1k fine-tune*: full "
        "fine-tuning). Each name links to its model card.",
        "",
        "| checkpoint | backbone (timm) | epochs | reported result | upstream | published "
        "| licence |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in catalog.CATALOG.values():
        upstream = "official release" if entry.upstream == catalog.OFFICIAL else "not released"
        published = (
            f"[yes](https://huggingface.co/{entry.hub_repo})" if entry.published else "not yet"
        )
        lines.append(
            f"| [{entry.name}]({CARDS_DIR}/{entry.name}.md) | `{entry.timm_arch}` | "
            f"{entry.epochs} | {result_summary(entry)} | {upstream} | {published} | "
            f"{entry.license} |"
        )
    lines += ["", TABLE_END]
    return "\n".join(lines)


def replace_zoo_table(readme: str) -> str:
    """``readme`` with its zoo section regenerated (appended at the end if it has no markers)."""
    table = render_zoo_table()
    start, end = readme.find(TABLE_START), readme.find(TABLE_END)
    if start == -1 and end == -1:
        return readme.rstrip("\n") + "\n\n" + table + "\n"
    if start == -1 or end == -1 or end < start:
        raise ValueError(f"README has unbalanced zoo-table markers ({TABLE_START} ... {TABLE_END})")
    return readme[:start] + table + readme[end + len(TABLE_END) :]


def expected_files(root: Path) -> dict[Path, str]:
    """Every generated file under the repository ``root`` and the content it must have."""
    files = {
        root / CARDS_DIR / f"{entry.name}.md": render_model_card(entry, sha256=entry.sha256)
        for entry in catalog.CATALOG.values()
    }
    readme = root / "README.md"
    files[readme] = replace_zoo_table(readme.read_text(encoding="utf-8"))
    return files


def drifted(root: Path) -> list[str]:
    """Generated files under ``root`` that differ from the catalog, as messages (empty: in sync)."""
    problems = []
    expected = expected_files(root)
    for path, text in expected.items():
        rel = path.relative_to(root)
        if not path.exists():
            problems.append(f"{rel}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{rel}: differs from the catalog")
    for path in sorted((root / CARDS_DIR).glob("*.md")):
        if path not in expected:
            problems.append(f"{path.relative_to(root)}: no such checkpoint in the catalog")
    return problems


def write(root: Path) -> list[Path]:
    """Write the generated files under ``root``; return those that changed."""
    changed = []
    expected = expected_files(root)
    (root / CARDS_DIR).mkdir(exist_ok=True)
    for path, text in expected.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for path in sorted((root / CARDS_DIR).glob("*.md")):
        if path not in expected:  # the folder is fully generated: a stale card must go
            path.unlink()
            changed.append(path)
    return changed
