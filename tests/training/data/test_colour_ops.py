"""The float-level colour kernels are bit-equal to torchvision's on uint8."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from selfsup_zoo.training.data import colour_ops
from selfsup_zoo.training.data.photometric import Photometric


def _images() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (3, 37, 45), dtype=torch.uint8, generator=gen)
    flat = torch.full((3, 8, 9), 77, dtype=torch.uint8)  # max == min everywhere
    extremes = torch.tensor([0, 255, 128, 127], dtype=torch.uint8)[
        torch.randint(0, 4, (3, 16, 16), generator=gen)
    ]
    return [noise, flat, extremes]


@pytest.mark.parametrize("factor", [0.0, 0.3, 0.77, 1.0, 1.4])
def test_brightness_contrast_saturation_equal_torchvision(factor: float) -> None:
    for img in _images():
        x = img.to(torch.float32)
        for ours, ref in (
            (colour_ops.adjust_brightness, TF.adjust_brightness),
            (colour_ops.adjust_contrast, TF.adjust_contrast),
            (colour_ops.adjust_saturation, TF.adjust_saturation),
        ):
            assert torch.equal(ours(x, factor).to(torch.uint8), ref(img, factor))


def test_grayscale_and_solarize_equal_torchvision() -> None:
    for img in _images():
        x = img.to(torch.float32)
        assert torch.equal(colour_ops.grayscale(x).to(torch.uint8), TF.rgb_to_grayscale(img, 3))
        assert torch.equal(colour_ops.solarize(img), TF.solarize(img, threshold=128))
        assert torch.equal(colour_ops.solarize(x).to(torch.uint8), TF.solarize(img, threshold=128))


def test_hue_equals_torchvision_on_every_rgb_colour() -> None:
    """All 2^24 colours (one [3, 4096, 4096] image) at a drawn shift; every 61st at two more."""
    v = torch.arange(256)
    cube = torch.stack(torch.meshgrid(v, v, v, indexing="ij")).reshape(3, 4096, 4096)
    cube = cube.to(torch.uint8)
    x = cube.to(torch.float32)
    for factor in (-0.5, 0.0371, -0.0999):
        assert torch.equal(
            colour_ops.adjust_hue(x, factor).to(torch.uint8), TF.adjust_hue(cube, factor)
        )


def test_hue_equals_torchvision_on_images() -> None:
    for img in _images():
        for factor in (-0.1, 0.05, 0.5):
            ours = colour_ops.adjust_hue(img.to(torch.float32), factor).to(torch.uint8)
            assert torch.equal(ours, TF.adjust_hue(img, factor))


def test_photometric_jitter_and_grayscale_equal_torchvision_transforms_and_draws() -> None:
    """Same torch draws, same pixels as v2.RandomApply([ColorJitter]) then v2.RandomGrayscale."""
    photo = Photometric(32, (0.4, 0.4, 0.2, 0.1), 0.8, 0.2, 0.0, 0.0, (0.1, 2.0), None)
    ref = v2.Compose(
        [v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), v2.RandomGrayscale(p=0.2)]
    )
    img = _images()[0]
    for seed in range(40):
        torch.manual_seed(seed)
        ours = photo.colour(img)
        after_ours = torch.rand(1)
        torch.manual_seed(seed)
        expected = ref(img)
        assert torch.equal(ours, expected)
        assert torch.equal(after_ours, torch.rand(1))  # the generator moved alike
