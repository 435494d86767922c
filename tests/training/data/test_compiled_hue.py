"""The compiled hue kernel gives the eager kernel's values, in views and in forked loader workers,
and falls back to the eager kernel (with one warning) where no C++ compiler works."""

from __future__ import annotations

from pathlib import Path

import torch
from _data_helpers import SMALL_SERE, apply_views
from torch.utils.data import DataLoader

from selfsup_zoo.training.data import colour_ops, compiled_hue
from selfsup_zoo.training.data.care_views import CareViews
from selfsup_zoo.training.data.collate import collate_views
from selfsup_zoo.training.data.dataset import ImageFolderDataset
from selfsup_zoo.training.data.sere_views import SereViews
from tests.helpers.subprocesses import run_python


def test_compiled_hue_equals_the_eager_kernel_on_every_colour_and_view_size() -> None:
    assert compiled_hue.warm_up()  # this machine has a C++ compiler: the kernel is compiled
    v = torch.arange(256, dtype=torch.float32)
    cube = torch.stack(torch.meshgrid(v, v, v, indexing="ij")).reshape(3, 4096, 4096)
    for factor in (-0.5, 0.0371):
        assert torch.equal(
            compiled_hue.adjust_hue(cube, factor), colour_ops.adjust_hue(cube, factor)
        )
    gen = torch.Generator().manual_seed(0)
    for side in (224, 96, 37):  # one compiled graph serves every size (dynamic shapes)
        img = torch.randint(0, 256, (3, side, side), generator=gen).to(torch.float32)
        assert torch.equal(compiled_hue.adjust_hue(img, 0.07), colour_ops.adjust_hue(img, 0.07))


def test_views_with_the_compiled_hue_equal_the_eager_views() -> None:
    gen = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8, generator=gen)
    pairs = [
        (CareViews(size=32, compile_hue=True), CareViews(size=32)),
        (SereViews(**SMALL_SERE, compile_hue=True), SereViews(**SMALL_SERE)),  # type: ignore[arg-type]
    ]
    for compiled, eager in pairs:
        compiled.warm_up()
        for seed in range(12):
            a, b = apply_views(compiled, img, seed), apply_views(eager, img, seed)
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), (seed, key)


def test_forked_workers_inherit_the_warmed_kernel_and_give_the_same_batches(
    digits_root: Path,
) -> None:
    views = CareViews(size=16, scale=(0.5, 1.0), jitter_p=1.0, compile_hue=True)
    views.warm_up()  # as the loader does, before the workers fork
    compiled = ImageFolderDataset(digits_root / "train", views, seed=3)
    plain = CareViews(size=16, scale=(0.5, 1.0), jitter_p=1.0)
    eager = ImageFolderDataset(digits_root / "train", plain, seed=3)
    indices = list(range(64))
    forked = DataLoader(
        torch.utils.data.Subset(compiled, indices),
        batch_size=16,
        num_workers=2,
        collate_fn=collate_views,
        multiprocessing_context="fork",
    )
    inline = DataLoader(
        torch.utils.data.Subset(eager, indices), batch_size=16, collate_fn=collate_views
    )
    for a, b in zip(forked, inline, strict=True):
        assert torch.equal(a["x1"], b["x1"]) and torch.equal(a["x2"], b["x2"])


_NO_COMPILER = """
import logging, torch
import torch._inductor.config as inductor_config
inductor_config.cpp.cxx = ("/nonexistent/g++",)  # as on a machine without a C++ compiler
from selfsup_zoo.training.data import colour_ops, compiled_hue
logging.basicConfig(level=logging.WARNING)
img = torch.randint(0, 256, (3, 24, 24), generator=torch.Generator().manual_seed(0)).float()
print(compiled_hue.warm_up())
print(torch.equal(compiled_hue.adjust_hue(img, 0.1), colour_ops.adjust_hue(img, 0.1)))
"""


def test_without_a_compiler_it_warns_once_and_gives_the_eager_values(tmp_path: Path) -> None:
    # a fresh inductor cache: a kernel compiled earlier must not be found and loaded instead
    fresh = {"TORCHINDUCTOR_FX_GRAPH_CACHE": "0", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "c")}
    proc = run_python(_NO_COMPILER, with_zoo=True, cwd=tmp_path, env_extra=fresh)
    assert proc.stdout.split() == ["False", "True"]
    warnings = [line for line in proc.stderr.splitlines() if "hue kernel failed" in line]
    assert len(warnings) == 1, proc.stderr
    assert "No working C++ compiler" in warnings[0] and "compile_hue=false" in warnings[0]
