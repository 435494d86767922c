"""SERE's views: iBOT multi-crop with recorded crop boxes and global-crop masks.

See docs/methods/sere.md §4.2 (crops and augmentations), §4.1 (masks) and §3.7 (the overlap grids
that the recorded boxes feed).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from selfsup_zoo.training.data.crops import IMAGENET_RATIO, interpolation_mode, sample_crop_box
from selfsup_zoo.training.data.masking import block_mask, random_mask
from selfsup_zoo.training.data.photometric import Photometric, view_pair

__all__ = ["SereViews"]


class SereViews:
    """iBOT multi-crop with recorded crop boxes and global-crop masks, as used by SERE.

    Crops (docs/methods/sere.md §4.2): two global crops (``global_size``, ``global_scale``) and
    ``local_crops`` local crops (``local_size``, ``local_scale``), aspect (3/4, 4/3), boxes drawn by
    :func:`~selfsup_zoo.training.data.crops.sample_crop_box` in original-image pixels, bicubic
    antialiased resize. Each crop then goes through: horizontal flip p 0.5 (recorded) ->
    ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8 -> grayscale p 0.2 -> Gaussian blur (global 1.0 / 0.1,
    locals 0.5) -> solarize (global 2 only, p 0.2). Each box row is ``[x0, y0, w, h, flip]``
    (float64, pixels of the decoded image), the input of the overlap grids
    (docs/methods/sere.md §3.7).

    Masks (docs/methods/sere.md §4.1) only for the two global crops (docs/methods/sere.md §8 #17:
    the official loader also draws unused local masks): per crop, one candidate ratio per
    ``(pred_ratio, pred_ratio_var)`` pair ~ U(mean - var, mean + var) (or the mean when var is 0),
    one candidate chosen uniformly, target T = ratio * G * G with G = global_size / patch_size;
    ratio 0 when ``epoch < pred_start_epoch``. ``pred_shape`` is ``"block"``
    (:func:`~selfsup_zoo.training.data.masking.block_mask`) or ``"rand"``
    (:func:`~selfsup_zoo.training.data.masking.random_mask`).

    Args:
        global_size: Side of the two global crops; a multiple of ``patch_size``.
        local_size: Side of the local crops.
        global_scale: Area range of the global crops.
        local_scale: Area range of the local crops.
        local_crops: Number of local crops ``L``.
        patch_size: The ViT's patch size (one mask entry per patch).
        pred_ratio: Mean masking ratio of each candidate.
        pred_ratio_var: Half-width of each candidate's uniform range (same length as
            ``pred_ratio``, or one number for all).
        pred_shape: ``"block"`` or ``"rand"``.
        pred_start_epoch: First epoch with masks (ratio 0 before it).
        ratio: Aspect range of every crop.
        jitter: ColorJitter's ``(brightness, contrast, saturation, hue)``.
        jitter_p: Probability of the colour jitter.
        grayscale_p: Probability of grayscale.
        global_blur_p: Blur probability of the global crops (one, or one per global crop).
        local_blur_p: Blur probability of the local crops.
        global_solarize_p: Solarize probability of the global crops (one, or one per crop).
        flip_p: Probability of the horizontal flip.
        sigma: Range of the blur's sigma.
        interpolation: Resampling of the crops (``"bicubic"`` officially).
        compile_hue: Run the colour jitter's hue with the compiled kernel (same crops, faster;
            docs/training.md §8.2).

    Calling it with ``(img: uint8[3, H, W], rng, epoch)`` returns
    ``{"global_crops": uint8[2, 3, Sg, Sg], "local_crops": uint8[L, 3, Sl, Sl],
    "masks": bool[2, G, G], "global_boxes": float64[2, 5], "local_boxes": float64[L, 5]}``.
    """

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        global_scale: Sequence[float] = (0.4, 1.0),
        local_scale: Sequence[float] = (0.05, 0.4),
        local_crops: int = 10,
        patch_size: int = 16,
        pred_ratio: float | Sequence[float] = (0.0, 0.3),
        pred_ratio_var: float | Sequence[float] = (0.0, 0.2),
        pred_shape: str = "block",
        pred_start_epoch: int = 0,
        *,
        ratio: Sequence[float] = IMAGENET_RATIO,
        jitter: Sequence[float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        global_blur_p: float | Sequence[float] = (1.0, 0.1),
        local_blur_p: float = 0.5,
        global_solarize_p: float | Sequence[float] = (0.0, 0.2),
        flip_p: float = 0.5,
        sigma: Sequence[float] = (0.1, 2.0),
        interpolation: str | InterpolationMode = "bicubic",
        compile_hue: bool = False,
    ) -> None:
        if global_size % patch_size != 0:
            raise ValueError(
                f"global_size {global_size} must be a multiple of patch_size {patch_size} "
                "(the mask has one entry per ViT patch)"
            )
        if pred_shape not in ("block", "rand"):
            raise ValueError(f"pred_shape must be 'block' or 'rand', got {pred_shape!r}")
        means = (
            [float(pred_ratio)]
            if isinstance(pred_ratio, (int, float))
            else [float(r) for r in pred_ratio]
        )
        vars_ = (
            [float(pred_ratio_var)] * len(means)
            if isinstance(pred_ratio_var, (int, float))
            else [float(v) for v in pred_ratio_var]
        )
        if len(means) != len(vars_):
            raise ValueError(f"pred_ratio {means} and pred_ratio_var {vars_} need the same length")
        for m, v in zip(means, vars_, strict=True):
            if v < 0 or v > m or m + v > 1.0:
                raise ValueError(
                    f"need 0 <= var <= mean and mean + var <= 1, got mean {m}, var {v}"
                )
        self.global_size = int(global_size)
        self.local_size = int(local_size)
        self.global_scale = (float(global_scale[0]), float(global_scale[1]))
        self.local_scale = (float(local_scale[0]), float(local_scale[1]))
        self.local_crops = int(local_crops)
        self.patch_size = int(patch_size)
        self.grid = self.global_size // self.patch_size
        self.pred_ratio = means
        self.pred_ratio_var = vars_
        self.pred_shape = pred_shape
        self.pred_start_epoch = int(pred_start_epoch)
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.flip_p = float(flip_p)
        self.interpolation = interpolation_mode(interpolation)
        g_blur = view_pair(global_blur_p, "global_blur_p")
        g_sol = view_pair(global_solarize_p, "global_solarize_p")
        self.global_photo = [
            Photometric(
                self.global_size,
                jitter,
                jitter_p,
                grayscale_p,
                g_blur[v],
                g_sol[v],
                sigma,
                None,
                compile_hue,
            )
            for v in range(2)
        ]
        self.local_photo = Photometric(
            self.local_size,
            jitter,
            jitter_p,
            grayscale_p,
            float(local_blur_p),
            0.0,
            sigma,
            None,
            compile_hue,
        )

    def warm_up(self) -> None:
        """Compile what ``compile_hue`` asks for now (the loader calls it before workers fork)."""
        for photo in [*self.global_photo, self.local_photo]:
            photo.warm_up()

    def _crop(
        self,
        img: torch.Tensor,
        rng: random.Random,
        size: int,
        scale: tuple[float, float],
        photo: Photometric,
    ) -> tuple[torch.Tensor, list[float]]:
        height, width = img.shape[-2:]
        x0, y0, w, h = sample_crop_box(rng, height, width, scale, self.ratio)
        out = TF.resized_crop(
            img, y0, x0, h, w, [size, size], interpolation=self.interpolation, antialias=True
        )
        flip = rng.random() < self.flip_p
        if flip:
            out = TF.horizontal_flip(out)
        out = photo.colour(out)
        out = photo.blur(out, rng)
        out = photo.solarize(out, rng)
        return out, [float(x0), float(y0), float(w), float(h), float(flip)]

    @property
    def output_size(self) -> int:
        """Side of the global crops (the resolution the exported teacher learnt)."""
        return self.global_size

    def mask_ratio(self, rng: random.Random, epoch: int) -> float:
        """The masking ratio of one global crop.

        Args:
            rng: The sample's Python RNG.
            epoch: The epoch the sample is drawn for.

        Returns:
            The ratio in [0, 1]; 0 before ``pred_start_epoch``.
        """
        if epoch < self.pred_start_epoch:
            return 0.0
        # Every candidate is drawn (consuming the RNG) before one is chosen, as in iBOT.
        candidates = [
            rng.uniform(m - v, m + v) if v > 0 else m
            for m, v in zip(self.pred_ratio, self.pred_ratio_var, strict=True)
        ]
        return rng.choice(candidates)

    def __call__(
        self, img: torch.Tensor, rng: random.Random, epoch: int = 0
    ) -> dict[str, torch.Tensor]:
        """The crops, masks and boxes of ``img`` (``uint8[3, H, W]``) for ``epoch``."""
        globals_, gboxes = zip(
            *(
                self._crop(img, rng, self.global_size, self.global_scale, self.global_photo[v])
                for v in range(2)
            ),
            strict=True,
        )
        locals_: list[torch.Tensor] = []
        lboxes: list[list[float]] = []
        for _ in range(self.local_crops):
            crop, box = self._crop(img, rng, self.local_size, self.local_scale, self.local_photo)
            locals_.append(crop)
            lboxes.append(box)
        make = block_mask if self.pred_shape == "block" else random_mask
        masks = [
            make(rng, self.grid, self.grid, self.mask_ratio(rng, epoch) * self.grid * self.grid)
            for _ in range(2)
        ]
        if locals_:
            local_t = torch.stack(locals_)
        else:
            local_t = torch.empty((0, 3, self.local_size, self.local_size), dtype=torch.uint8)
        return {
            "global_crops": torch.stack(globals_),
            "local_crops": local_t,
            "masks": torch.stack(masks),
            "global_boxes": torch.tensor(gboxes, dtype=torch.float64),
            "local_boxes": torch.tensor(lboxes, dtype=torch.float64).reshape(self.local_crops, 5),
        }
