"""Name -> prepared case, in the subprocess that times it."""

from __future__ import annotations

from pathlib import Path

from .official import prepare_official
from .peak import prepare_matmul
from .steps import prepare_care, prepare_sere
from .timing import Prepared
from .views import FOLDER_IMAGES, jpeg_folder, prepare_care_views, prepare_sere_views
from .zoo import prepare_inference, prepare_load

__all__ = ["prepare"]


def prepare(
    name: str,
    impl: str,
    setting: str,
    device: str,
    workdir: Path,
    quick: bool,
    official_dir: Path | None,
) -> Prepared:
    """Build case ``name`` in this process.

    Args:
        name: ``peak:matmul``, ``care_step``, ``sere_step``, ``care_views``, ``sere_views``,
            ``load:<arch>`` or ``infer:<arch>``.
        impl: ``ours`` or ``official`` (then ``official_dir`` is the official work tree).
        setting: The case's setting (see :mod:`benchmarks.cli`).
        device: ``cpu`` or ``cuda`` (the view and load cases always run on the CPU).
        workdir: The runner's temporary folder (JPEGs, weights files).
        quick: Tiny sizes.
        official_dir: Work tree of the official repository.

    Returns:
        The case, ready for :func:`benchmarks.timing.measure`.
    """
    views = name.endswith("_views")
    folder = jpeg_folder(workdir, 4 if quick else FOLDER_IMAGES) if views else workdir
    if impl == "official":
        if official_dir is None:
            raise SystemExit("--impl official needs --official-dir")
        return prepare_official(name, official_dir, folder, device, setting, quick)
    if name == "peak:matmul":
        return prepare_matmul(device, quick)
    if name == "care_step":
        return prepare_care(setting, device, quick)
    if name == "sere_step":
        return prepare_sere(setting, device, quick)
    if name == "care_views":
        return prepare_care_views(folder, setting, quick)
    if name == "sere_views":
        return prepare_sere_views(folder, setting, quick)
    kind, _, arch = name.partition(":")
    if kind == "load":
        return prepare_load(workdir, arch, setting)
    if kind == "infer":
        return prepare_inference(arch, setting, device, quick)
    raise SystemExit(f"unknown case {name!r}")
