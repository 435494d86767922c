"""The colour pipeline of one view and its blur kernel."""

from __future__ import annotations

from selfsup_zoo.training.data.photometric import blur_kernel_size


def test_blur_kernel_size() -> None:
    assert blur_kernel_size(224) == 23  # BYOL's kernel
    assert blur_kernel_size(96) == 13  # +-3 sigma_max for sigma_max = 2
    assert all(blur_kernel_size(s) % 2 == 1 for s in range(8, 400))
