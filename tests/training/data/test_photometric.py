"""The colour pipeline of one view and its blur kernel."""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as TF

from selfsup_zoo.training.data.photometric import blur_kernel_size, gaussian_blur_separable


def test_blur_kernel_size() -> None:
    assert blur_kernel_size(224) == 23  # BYOL's kernel
    assert blur_kernel_size(96) == 13  # +-3 sigma_max for sigma_max = 2
    assert all(blur_kernel_size(s) % 2 == 1 for s in range(8, 400))


def test_separable_blur_matches_torchvision_within_one_level_on_rare_pixels() -> None:
    """Documented tolerance (photometric.py): off by at most 1 grey level, on < 1e-4 of pixels."""
    gen = torch.Generator().manual_seed(0)
    diffs = []
    for side, kernel in ((224, 23), (96, 13), (20, 13), (37, 23)):
        for _ in range(4):
            img = torch.randint(0, 256, (3, side, side + 3), dtype=torch.uint8, generator=gen)
            sigma = 0.1 + 1.9 * float(torch.rand((), generator=gen))
            ours = gaussian_blur_separable(img, kernel, sigma)
            ref = TF.gaussian_blur(img, [kernel, kernel], [sigma, sigma])
            assert ours.dtype == torch.uint8 and ours.shape == img.shape
            diffs.append((ours.int() - ref.int()).abs().flatten())
    d = torch.cat(diffs)
    assert int(d.max()) <= 1
    assert float((d > 0).float().mean()) < 1e-4
