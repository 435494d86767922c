"""Fixtures shared by the data tests: a small digits folder and a folder with unreadable files.

Small images keep these tests fast (the whole folder runs in about 15 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _data_helpers import noise, write_image

from selfsup_zoo.training.data.embedded import materialize_digits


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded digits at 16 px (``train`` and ``val`` splits), built once per session."""
    return materialize_digits(tmp_path_factory.mktemp("digits"), size=16)


@pytest.fixture()
def folder_with_corrupt_files(tmp_path: Path) -> Path:
    """Five images in ``cat``/``dog``, two unreadable (garbage, truncated), and a text file."""
    write_image(tmp_path / "cat" / "0.png", noise(16, 16, 10))
    (tmp_path / "cat" / "1.jpg").write_bytes(b"this is not a JPEG file" * 20)  # garbage
    png = tmp_path / "cat" / "2.png"
    write_image(png, noise(40, 40, 11))
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])  # truncated
    write_image(tmp_path / "cat" / "3.png", noise(16, 18, 12))
    write_image(tmp_path / "dog" / "4.png", noise(20, 16, 13))
    (tmp_path / "dog" / "notes.txt").write_text("ignored: not an image extension")
    return tmp_path
