"""Weights shared by several processes: concurrent loads and installs never see a partial entry.

Real processes (multiprocessing's forkserver, with torch, timm and the package preloaded so that
each child starts in milliseconds), offline: the weights come from a Hugging Face cache built by the
test and from hub folders installed into ``$SELFSUP_ZOO_WEIGHTS`` while the others load.
"""

from __future__ import annotations

import multiprocessing
import queue
import time

import pytest

from selfsup_zoo.weights import file_sha256, read_safetensors_header

from . import _workers

READERS = 8
INSTALLERS = 2
ROUNDS = 1  # one load each: what matters is that all eight start at once


def _collect(results: multiprocessing.Queue, expected: int, deadline: float) -> list[tuple]:
    out = []
    while len(out) < expected:
        try:
            out.append(results.get(timeout=max(deadline - time.monotonic(), 0.1)))
        except queue.Empty:
            pytest.fail(f"only {len(out)} of {expected} processes reported in time: {out}")
    return out


def test_eight_loads_and_two_installs_of_one_checkpoint_at_once(r50_folder, hf_cache, weights_dir):
    """8 processes ``timm.create_model(..., pretrained=True)`` on a cold weights directory while 2
    processes install the same hub folder into it over and over: every load gets exactly the
    published weights, no install fails, and the entry left behind is complete."""
    source, folder = r50_folder
    from selfsup_zoo.catalog import CATALOG

    # A cold local weights directory; the Hub cache holds the checkpoint (as after a download).
    hf_cache(
        CATALOG[_workers.R50].hub_repo,
        {"model.safetensors": folder.weights_path, "config.json": folder.config_path},
    )
    expected = _workers.state_digest(source.state_dict())

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "timm", "selfsup_zoo", _workers.__name__])
    barrier = ctx.Barrier(READERS + INSTALLERS)
    done = ctx.Value("i", 0)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_workers.load, args=(str(weights_dir), ROUNDS, barrier, done, results))
        for _ in range(READERS)
    ] + [
        ctx.Process(
            target=_workers.install,
            args=(str(weights_dir), str(folder.path), READERS, barrier, done, results),
        )
        for _ in range(INSTALLERS)
    ]
    for proc in procs:
        proc.start()
    try:
        reports = _collect(results, len(procs), time.monotonic() + 120)
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()

    errors = [body for _, status, body in reports if status == "error"]
    assert not errors, "\n".join(errors)
    loads = [seen for role, _, seen in reports if role == "load"]
    installs = [count for role, _, count in reports if role == "install"]
    assert len(loads) == READERS and len(installs) == INSTALLERS
    assert all(count >= 2 for count in installs)
    digests = [digest for seen in loads for _, digest in seen]
    assert len(digests) == READERS * ROUNDS and set(digests) == {expected}
    sources = {source for seen in loads for source, _ in seen}
    assert sources <= {"hf-cache", "weights-dir"}

    entry = weights_dir / _workers.R50
    assert sorted(p.name for p in entry.iterdir()) == sorted(p.name for p in folder.path.iterdir())
    read_safetensors_header(entry / "model.safetensors")
    assert file_sha256(entry / "model.safetensors") == folder.sha256
    # Nothing half-done is left next to the entry (staging folders, temporary files).
    assert sorted(p.name for p in weights_dir.iterdir() if not p.name.endswith(".lock")) == [
        _workers.R50
    ]
