"""Model cards and the README's zoo table, generated from the catalog.

Every checkpoint of :data:`selfsup_zoo.catalog.CATALOG` gets a Hugging Face model card
(``model_cards/<arch>.<tag>.md``, YAML metadata at the top) and one row in the README's zoo table.
Nothing here is written by hand per checkpoint: edit the catalog, then run::

    python -m selfsup_zoo.cards           # rewrite model_cards/ and the README table
    python -m selfsup_zoo.cards --check   # exit 1 and list the files that drifted from the catalog

:func:`render_model_card` is also what the hub-folder writer puts in each folder's ``README.md``,
with the sha256 of the weights it just wrote and, for regenerated weights, the run's provenance.

Modules: :mod:`.vocabulary` (how protocols, metrics and methods are named), :mod:`.facts`
(parameter counts and feature maps measured on the architecture), :mod:`.sections` (the card's
sections), :mod:`.model_card` (:func:`render_model_card`), :mod:`.zoo_table` (the README table,
drift check and writer) and :mod:`.cli` (the command).
"""

from __future__ import annotations

from selfsup_zoo.catalog import convert_command, hub_folder, regenerate_command

from .cli import main
from .model_card import render_model_card
from .vocabulary import GITHUB_REPO, METHOD_TITLES, result_summary
from .zoo_table import (
    CARDS_DIR,
    REGENERATE_COMMAND,
    TABLE_END,
    TABLE_START,
    drifted,
    expected_files,
    render_zoo_table,
    replace_zoo_table,
    write,
)

__all__ = [
    "GITHUB_REPO",
    "CARDS_DIR",
    "TABLE_START",
    "TABLE_END",
    "REGENERATE_COMMAND",
    "METHOD_TITLES",
    "render_model_card",
    "result_summary",
    "render_zoo_table",
    "replace_zoo_table",
    "expected_files",
    "drifted",
    "write",
    "main",
    # Defined in selfsup_zoo.catalog, re-exported where they used to live.
    "hub_folder",
    "convert_command",
    "regenerate_command",
]
