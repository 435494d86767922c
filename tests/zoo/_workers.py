"""Process bodies for tests/zoo/test_shared_weights.py (importable by name, as spawn needs).

Each worker reports ``("ok", result)`` or ``("error", traceback)`` on a queue, so that a failure in
a child process fails the test with its traceback instead of a bare exit code.
"""

from __future__ import annotations

import hashlib
import os
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import timm
import torch

from selfsup_zoo.catalog import CATALOG
from selfsup_zoo.hub_folder import install_hub_folder
from selfsup_zoo.weights import resolve_weights

R50 = "care_resnet50.in1k_ep100"


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in key order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _report(queue: Any, role: str, body: Callable[[], Any]) -> None:
    try:
        queue.put((role, "ok", body()))
    except BaseException:
        queue.put((role, "error", traceback.format_exc()))


def load(weights_root: str, rounds: int, barrier: Any, done: Any, queue: Any) -> None:
    """``timm.create_model(R50, pretrained=True)`` ``rounds`` times; report the weights' digests."""

    def body() -> list[tuple[str, str]]:
        os.environ["SELFSUP_ZOO_WEIGHTS"] = weights_root

        barrier.wait()
        seen = []
        try:
            for _ in range(rounds):
                source = resolve_weights(CATALOG[R50]).source
                model = timm.create_model(R50, pretrained=True)
                seen.append((source, state_digest(model.state_dict())))
        finally:
            with done.get_lock():
                done.value += 1
        return seen

    _report(queue, "load", body)


def install(
    weights_root: str, folder: str, readers: int, barrier: Any, done: Any, queue: Any
) -> None:
    """Install ``folder`` as R50 again and again until every reader has finished."""

    def body() -> int:
        os.environ["SELFSUP_ZOO_WEIGHTS"] = weights_root
        barrier.wait()
        installs = 0
        # At least two installs each, then keep going while any reader is still loading.
        while installs < 2 or done.value < readers:
            install_hub_folder(folder, R50)
            installs += 1
            time.sleep(0.01)
        return installs

    _report(queue, "install", body)
