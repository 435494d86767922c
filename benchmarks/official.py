"""The official CARE and SERE code, timed the same way as ours (run from a checkout outside ours).

Point the runner at work trees of the official repositories (``git archive`` of
ChongjianGE/CARE and MCG-NKU/SERE); nothing of theirs is copied here. Their files are imported
unchanged from that folder. What the CPU machine lacks is supplied around them, never inside their
files: empty stand-ins for ``ipdb`` (imported, never used, by CARE's ``care_module.py``) and
``tensorboardX`` (imported at the top of SERE's ``main_sere.py``, which also holds
``DataAugmentationiBOT``) when those packages are not installed. SERE's ``utils.py`` (iBOT's) is
part of the SERE repository.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .steps import care_shape, precision
from .timing import Prepared, count_flops
from .views import IMAGES_PER_CALL

__all__ = ["prepare_official"]


def _stand_ins() -> None:
    """Empty modules for imports the official code makes but the benchmark never reaches."""
    for name, attrs in (("ipdb", ("set_trace",)), ("tensorboardX", ("SummaryWriter",))):
        if importlib.util.find_spec(name) is None and name not in sys.modules:
            module = types.ModuleType(name)
            for attr in attrs:
                setattr(module, attr, None)
            sys.modules[name] = module


def _import_from(root: Path, module: str) -> Any:
    _stand_ins()
    sys.path.insert(0, str(root))
    return importlib.import_module(module)


def _care_step(root: Path, device: str, setting: str, quick: bool) -> Prepared:
    if quick:
        raise SystemExit("the official CARE network has fixed ResNet-50 sizes: no --quick")
    shape = care_shape(quick, device.startswith("cuda"))
    care_module = _import_from(root, "models.care_module")
    torch.manual_seed(0)
    model = care_module.CARE(param_momentum=0.99, total_iters=1000).train().to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)
    x = [torch.randn(shape.batch, 3, shape.size, shape.size, device=device) for _ in range(2)]

    def step() -> None:
        with precision(setting, device):
            loss = model(x)[0]  # its forward does the EMA update first
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    flops = (lambda: count_flops(step)) if device.startswith("cuda") else None
    return Prepared(step, shape.batch, flops, device)


def _care_views(root: Path, folder: Path, quick: bool) -> Prepared:
    transforms = _import_from(root, "data.transforms")
    torch.set_num_threads(1)
    q, k = transforms.standard_transform()
    files = sorted(folder.rglob("*.jpg"))
    order = [0]

    def call() -> None:
        for _ in range(IMAGES_PER_CALL):
            # torchvision's ImageFolder loader, as the official SSL_Dataset uses
            with open(files[order[0] % len(files)], "rb") as f:
                img = Image.open(f).convert("RGB")
            q(img), k(img)
            order[0] += 1

    return Prepared(call, IMAGES_PER_CALL)


def _sere_views(root: Path, folder: Path, quick: bool) -> Prepared:
    if quick:
        raise SystemExit("the official SERE views have fixed 224/96 px sizes: no --quick")
    main_sere = _import_from(root, "main_sere")
    loader = importlib.import_module("loader")
    torch.set_num_threads(1)
    augment = main_sere.DataAugmentationiBOT((0.4, 1.0), (0.05, 0.4), 2, 10, overlap_size=(13, 13))
    ds = loader.ImageFolderMask(
        str(folder),
        transform=augment,
        patch_size=16,
        pred_ratio=[0.0, 0.3],
        pred_ratio_var=[0.0, 0.2],
        pred_aspect_ratio=(0.3, 1 / 0.3),
        pred_shape="block",
    )
    order = [0]

    def call() -> None:
        for _ in range(IMAGES_PER_CALL):
            ds[order[0] % len(ds)]
            order[0] += 1

    return Prepared(call, IMAGES_PER_CALL)


def _sere_step(root: Path, device: str, setting: str, quick: bool) -> Prepared:
    raise SystemExit(
        "the official SERE step is a training loop inside main_sere.train_one_epoch "
        "(distributed, CUDA): not timed by this runner yet"
    )


def prepare_official(
    case: str, root: Path, folder: Path, device: str, setting: str, quick: bool
) -> Prepared:
    """The official implementation of ``case``.

    Args:
        case: ``care_step``, ``care_views``, ``sere_views`` (``sere_step`` is not available).
        root: Work tree of the official repository.
        folder: JPEG folder of the view cases.
        device: ``cpu`` or ``cuda``.
        setting: Always ``official``.
        quick: Tiny sizes (not supported by the official code: exits).

    Returns:
        The prepared case.
    """
    if case == "care_step":
        return _care_step(root, device, setting, quick)
    if case == "sere_step":
        return _sere_step(root, device, setting, quick)
    if case == "care_views":
        return _care_views(root, folder, quick)
    if case == "sere_views":
        return _sere_views(root, folder, quick)
    raise SystemExit(f"no official implementation of {case}")
