"""The one output type of the deblurring networks and its two readers, :func:`prediction` and :func:`levels`.

Every deblurring network of the package (DeepRFTv2, its ablation variants, whatever DeblurModel supervises)
returns :class:`DeblurOutputs` in training and in evaluation: every image it predicts, grouped by resolution —
full, half (DeepRFTv2's mid scale) and quarter (MIMO-UNet) — each group in the order the sub-UNets produce them.
The prediction is the last full-resolution image (paper section 3.1). Networks that predict a single image
(super-resolution) return a tensor; both readers accept it too.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

__all__ = ['DeblurOutputs', 'prediction', 'levels']


class DeblurOutputs(NamedTuple):
    """Every image a deblurring network predicts, per resolution (coarser groups empty when absent)."""
    full: list[Tensor]
    half: list[Tensor] = []
    quarter: list[Tensor] = []

    @property
    def prediction(self) -> Tensor:
        return self.full[-1]


def prediction(out: Any) -> Tensor:
    """The restored image of a network output: a tensor itself, or the last full-resolution image."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, DeblurOutputs):
        return out.full[-1]
    raise ValueError(f'network output: expected a Tensor or DeblurOutputs, got {type(out).__name__}')


def levels(out: Any) -> list[list[Tensor]]:
    """A network output's images grouped by resolution, [full, half, quarter], trailing empty groups dropped."""
    if isinstance(out, Tensor):
        return [[out]]
    if not isinstance(out, DeblurOutputs):
        raise ValueError(f'network output: expected a Tensor or DeblurOutputs, got {type(out).__name__}')
    groups = [list(out.full), list(out.half), list(out.quarter)]
    while len(groups) > 1 and not groups[-1]:
        groups.pop()
    return groups
