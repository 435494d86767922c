"""A hub folder loaded by plain timm in a fresh interpreter that never imports selfsup_zoo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def plain_timm_forward(folder: Path, cwd: Path) -> list[str]:
    """Load ``folder`` with ``timm.create_model('local-dir:...')`` in a fresh interpreter that must
    never import selfsup_zoo, run a 2 x 3 x 32 x 32 batch; returns [class name, *output shape]."""
    check = (
        "import sys, timm, torch\n"
        f"m = timm.create_model('local-dir:{folder}', pretrained=True).eval()\n"
        "assert not any(k.startswith('selfsup_zoo') for k in sys.modules)\n"
        "print(type(m).__name__, tuple(m(torch.zeros(2, 3, 32, 32)).shape))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    return loaded.stdout.split()
