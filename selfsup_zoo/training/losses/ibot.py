"""iBOT's self-distillation losses: the class-token loss and the masked-patch (MIM) loss.

References:
    [1] Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022.
        https://arxiv.org/abs/2111.07832
    [2] Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO),
        ICCV 2021. https://arxiv.org/abs/2104.14294
    [3] Li, Gao, Cheng, "SERE: Exploring Feature Self-relation for Self-supervised Transformers",
        TPAMI 2023. https://arxiv.org/abs/2206.05184 (uses both losses unchanged)

Both compare a centred, sharpened teacher distribution with the student's over K prototypes::

    P_t = softmax((t - c) / tau_t),   H(P_t, s) = sum_k -P_t[k] * log_softmax(s / tau_s)[k]

- CLS loss [1]: for each teacher global view q and each student view v != q (the other
  global view and every local view), the batch mean of H over the CLS logits; the 2 (1 + L)
  terms are averaged with equal weight (``docs/methods/sere.md`` §3.2).
- Patch loss [1]: only v == q, the student seeing view q masked. Per image the sum of H
  over the masked tokens divided by max(1, masked tokens), then the batch mean with unmasked
  images counted as 0, then the mean over the two views (§3.3, §8 #15).

Each loss owns its :class:`~selfsup_zoo.training.losses.center.Center`; the centres move after the
loss has used them (§3.4). Tensors are view-major: the 2B global rows are view 1's B images, then
view 2's. Everything is computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup_zoo.training.collectives import Collectives

from .center import Center


def soft_cross_entropy(target_probs: Tensor, student_logits: Tensor) -> Tensor:
    """Cross-entropy of a target distribution against logits, per row, in float32.

    Args:
        target_probs: [..., K] probabilities (rows sum to 1, or 0 for an all-zero target).
        student_logits: [..., K] logits, same shape.

    Returns:
        [...]: ``sum_k -P[k] * log_softmax(s)[k]`` over the last axis.
    """
    # Negating the sum, not the targets, saves a copy of P per call with identical values.
    return -torch.sum(target_probs.float() * F.log_softmax(student_logits.float(), dim=-1), dim=-1)


class IBOTClsLoss(nn.Module):
    """iBOT class-token loss with its CLS centre ``center`` [1, K].

    Args:
        out_dim: K, the CLS prototypes.
        student_temp: tau_s (0.1).
        center_momentum: EMA momentum of the centre.
        accum_iter: micro-batches per optimizer step (see :class:`Center`).
    """

    def __init__(
        self, out_dim: int, student_temp: float, center_momentum: float, accum_iter: int
    ) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center = Center((1, out_dim), center_momentum, accum_iter)

    def forward(
        self,
        teacher: Tensor,
        student_global: Tensor,
        student_local: Tensor | None,
        teacher_temp: float,
    ) -> tuple[Tensor, dict[tuple[int, int], Tensor]]:
        """Mean CLS loss and its terms.

        Args:
            teacher: [2B, K] raw teacher logits of the two global views.
            student_global: [2B, K] student logits of the (masked) global views.
            student_local: [L*B, K] student logits of the local views, or None.
            teacher_temp: tau_t of this epoch.

        Returns:
            (loss, terms): the mean of the terms (a scalar), and {(q, v): batch mean of H} for
            teacher view q in {0, 1} and student view v (0, 1 global, 2 + i local i), v != q.
        """
        with torch.autocast(device_type=teacher.device.type, enabled=False):
            bsz = teacher.shape[0] // 2
            targets = F.softmax((teacher.float() - self.center.value) / teacher_temp, dim=-1)
            targets_v = targets.chunk(2)  # 2 x [B, K]
            students = list((student_global.float() / self.student_temp).chunk(2))
            if student_local is not None:
                n_local = student_local.shape[0] // bsz
                students += list((student_local.float() / self.student_temp).chunk(n_local))
            terms: dict[tuple[int, int], Tensor] = {}
            for q in range(2):
                for v, student in enumerate(students):
                    if v != q:
                        terms[(q, v)] = soft_cross_entropy(
                            targets_v[q], student
                        ).mean()  # [B] -> ()
            return torch.stack(list(terms.values())).mean(), terms

    def update_center(self, teacher: Tensor, collectives: Collectives) -> None:
        """Move the centre with this step's raw teacher CLS logits [2B, K] (after the loss)."""
        self.center.update(teacher, collectives)


class IBOTPatchLoss(nn.Module):
    """iBOT masked-patch loss with its patch centre ``center`` [1, 1, K2].

    Args:
        patch_out_dim: K2, the patch prototypes.
        student_temp: tau_s (0.1).
        center_momentum: EMA momentum of the centre.
        accum_iter: micro-batches per optimizer step (see :class:`Center`).
    """

    def __init__(
        self, patch_out_dim: int, student_temp: float, center_momentum: float, accum_iter: int
    ) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center = Center((1, 1, patch_out_dim), center_momentum, accum_iter)

    def forward(
        self, teacher: Tensor, student: Tensor, masks: Tensor | None, teacher_temp: float
    ) -> tuple[Tensor, list[Tensor]]:
        """Mean masked-patch loss and the per-image losses of each view.

        Args:
            teacher: [2B, N, K2] raw teacher patch logits of the unmasked global views.
            student: [2B, N, K2] student patch logits of the same views, masked.
            masks: [2B, h, w] bool, True where the student saw the mask token (N = h*w); None
                means no token was masked (every term is 0).
            teacher_temp: tau_t of the patch loss for this epoch.

        Returns:
            (loss, per_image): the scalar loss and, per global view, the [B] per-image losses.
        """
        with torch.autocast(device_type=teacher.device.type, enabled=False):
            bsz = teacher.shape[0] // 2
            targets = F.softmax((teacher.float() - self.center.value) / teacher_temp, dim=-1)
            targets_v = targets.chunk(2)  # 2 x [B, N, K2]
            students = (student.float() / self.student_temp).chunk(2)
            masks_v = masks.chunk(2) if masks is not None else None
            per_image: list[Tensor] = []
            for q in range(2):
                if masks_v is None:
                    per_image.append(students[q].new_zeros(bsz))
                    continue
                per_token = soft_cross_entropy(targets_v[q], students[q])  # [B, N]
                m = masks_v[q].flatten(1).float()  # [B, h, w] -> [B, N]
                # Per image, then the batch mean with unmasked images counted (§3.3, §8 #15).
                per_image.append((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0))  # [B]
            return torch.stack([p.mean() for p in per_image]).mean(), per_image

    def update_center(self, teacher: Tensor, collectives: Collectives) -> None:
        """Move the centre with this step's raw teacher patch logits [2B, N, K2] (after the loss):
        the statistic per image is the mean over all its tokens, masked or not (§3.4)."""
        self.center.update(teacher.float().mean(1), collectives)  # [2B, N, K2] -> [2B, K2]
