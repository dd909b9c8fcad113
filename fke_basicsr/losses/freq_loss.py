"""FreqLoss: mean complex modulus of the difference of unnormalised one-sided spectra (paper §4.1)."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn

from fke_basicsr.ops.fft import rfft2
from fke_basicsr.registry import register

__all__ = ['FreqLoss', 'freq_distance']

_REDUCTIONS = ('none', 'mean', 'sum')
Prediction = Union[Tensor, Sequence[Tensor]]


def freq_distance(pred: Tensor, target: Tensor) -> Tensor:
    """|rfft2(pred) − rfft2(target)| element-wise (fp32 whatever the input dtype; 'backward' norm, no scaling)."""
    if pred.shape != target.shape:
        raise ValueError(f'pred and target must have the same shape, got {tuple(pred.shape)} and '
                         f'{tuple(target.shape)}')
    # The difference of spectra (not of images) keeps the formula literal; rfft2 is linear so both agree.
    return (rfft2(pred) - rfft2(target)).abs()


@register(LOSS_REGISTRY)
class FreqLoss(nn.Module):
    """DeepRFTv2's frequency loss: weight · mean |rfft2(pred) − rfft2(gt)| (the authors' FourierLoss).

    Args:
        loss_weight: multiplier of the loss (the paper uses 0.01 next to an L1 of weight 1).
        reduction: 'mean' (over B·C·H·(W//2+1) spectrum entries), 'sum' or 'none' (the per-entry modulus map).
    A list/tuple of predictions against one target gives the mean over the list of the per-prediction losses.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean') -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'reduction must be one of {_REDUCTIONS}, got {reduction!r}')
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def _one(self, pred: Tensor, target: Tensor) -> Tensor:
        dist = freq_distance(pred, target)
        if self.reduction == 'mean':
            return dist.mean()
        if self.reduction == 'sum':
            return dist.sum()
        return dist

    def forward(self, pred: Prediction, target: Tensor, weight: Tensor | None = None, **kwargs) -> Tensor:
        """Loss of ``pred`` (a tensor or a list of tensors) against ``target``; ``weight`` is not supported."""
        if weight is not None:
            raise ValueError('weight: FreqLoss has no element-wise weight (spectra do not align with pixels); '
                             'pass weight=None')
        if isinstance(pred, (list, tuple)):
            if len(pred) == 0:
                raise ValueError('pred: got an empty list of predictions')
            loss = torch.stack([self._one(p, target) for p in pred]).mean(0)
        else:
            loss = self._one(pred, target)
        return self.loss_weight * loss
