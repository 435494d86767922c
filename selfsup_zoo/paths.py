"""Where the package keeps files on disk: one cache root for weights and data sets.

``$SELFSUP_ZOO_CACHE`` when set, else ``$XDG_CACHE_HOME/selfsup_zoo``, else
``~/.cache/selfsup_zoo``. Weights live in ``<root>/weights`` (``$SELFSUP_ZOO_WEIGHTS`` overrides
that folder alone, for air-gapped sites that keep weights elsewhere) and materialised data sets
in ``<root>/data``. See ``docs/weights.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SELFSUP_ZOO_CACHE"
WEIGHTS_DIR_ENV = "SELFSUP_ZOO_WEIGHTS"


def cache_root() -> Path:
    """The package's cache root (see the module docstring for the order of precedence)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache_home).expanduser() / "selfsup_zoo"


def weights_root() -> Path:
    """The local weights directory: ``$SELFSUP_ZOO_WEIGHTS``, else ``cache_root() / "weights"``."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(env).expanduser() if env else cache_root() / "weights"


def data_root() -> Path:
    """Where embedded data sets are materialised by default: ``cache_root() / "data"``."""
    return cache_root() / "data"
