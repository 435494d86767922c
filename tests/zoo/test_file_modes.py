"""File modes in a shared weights directory: what the installer and the atomic writers create gets
the umask's mode (0755 folders / 0644 files under umask 022), never the 0700 / 0600 of temporary
files or the mode of a private source file."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from selfsup_zoo._io import atomic_write, atomic_write_text, current_umask
from selfsup_zoo.hub_folder import install_hub_folder

R50 = "care_resnet50.in1k_ep100"


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_the_mask_without_changing_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_atomic_writes_follow_the_umask(tmp_path, umask):
    atomic_write(tmp_path / "model.safetensors", lambda f: f.write(b"x"))
    atomic_write_text(tmp_path / "config.json", "{}\n")
    for name in ("model.safetensors", "config.json"):
        assert _mode(tmp_path / name) == 0o666 & ~umask, name


def test_installed_entry_and_files_get_the_umask_mode(tmp_path, r50_folder, weights_dir, umask):
    _, folder = r50_folder
    private = tmp_path / "private_hub"
    shutil.copytree(folder.path, private)
    for item in private.iterdir():
        item.chmod(0o600)  # a hub folder its writer kept private
    weights = install_hub_folder(private, R50)
    entry = weights.parent
    assert _mode(entry) == 0o777 & ~umask
    files = sorted(p.name for p in entry.iterdir())
    assert "model.safetensors" in files and "config.json" in files
    for name in files:
        assert _mode(entry / name) == 0o666 & ~umask, name
    # installing over the existing entry (file by file) keeps the modes too
    os.umask(0o022)
    install_hub_folder(private, R50)
    for name in files:
        assert _mode(entry / name) == 0o644, name
