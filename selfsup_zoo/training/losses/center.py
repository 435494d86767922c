"""The EMA centre of the teacher's outputs (DINO's centring, used by iBOT and SERE).

References:
    [1] Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO),
        ICCV 2021. https://arxiv.org/abs/2104.14294
    [2] Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022.
        https://arxiv.org/abs/2111.07832

The teacher's logits are centred before its softmax, ``softmax((t - c) / tau)``, and the centre
follows the mean teacher output over the *global* batch (every process, every micro-batch of one
optimizer step) [1]::

    c <- m * c + (1 - m) * (sum over the global batch of x_i) / (R * world_size * accum_iter)

with x_i one row per image ([R, K] on each process). With ``accum_iter`` > 1 the sums of the
micro-batches are pooled and the centre moves once per optimizer step (``docs/methods/sere.md``
§3.4, §8 #16). The sums cross processes through a
:class:`~selfsup_zoo.training.collectives.Collectives` object, so the loss itself knows nothing
about processes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup_zoo.training.collectives import Collectives


class Center(nn.Module):
    """EMA centre ``value`` of shape ``shape``, with the micro-batch sums not yet applied.

    Buffers: ``value`` (the centre the loss subtracts), ``accum`` (sum of the rows of the pending
    micro-batches, same shape) and ``count`` (micro-batches in ``accum``, a 0-d long tensor).

    Args:
        shape: the centre's shape, broadcastable against the teacher logits: [1, K] for the
            CLS logits [R, K], [1, 1, K] for patch logits [R, N, K].
        momentum: m of the EMA (0.9 in iBOT and SERE).
        accum_iter: micro-batches per optimizer step.
    """

    value: Tensor
    accum: Tensor
    count: Tensor

    def __init__(self, shape: tuple[int, ...], momentum: float = 0.9, accum_iter: int = 1) -> None:
        super().__init__()
        if accum_iter < 1:
            raise ValueError(f"accum_iter must be >= 1, got {accum_iter}")
        self.momentum = momentum
        self.accum_iter = accum_iter
        self.register_buffer("value", torch.zeros(shape))
        self.register_buffer("accum", torch.zeros(shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, rows: Tensor, collectives: Collectives) -> None:
        """Add one micro-batch; move the centre when ``accum_iter`` micro-batches are in.

        Call after the loss has used the current centre (the loss sees the centre of the previous
        step).

        Args:
            rows: [R, K] one statistic per image of this process (raw, uncentred teacher logits,
                or their mean over tokens for the patch centre).
            collectives: sums ``accum`` over every process.
        """
        total = rows.float().sum(0, keepdim=True).reshape(self.value.shape)  # [R, K] -> shape
        collectives.all_reduce_sum_([total])
        self.accum += total
        self.count += 1
        if int(self.count) % self.accum_iter:
            return
        images = rows.shape[0] * collectives.world_size * self.accum_iter
        m = self.momentum
        self.value.copy_(self.value * m + self.accum / images * (1 - m))
        self.accum.zero_()
        self.count.zero_()
