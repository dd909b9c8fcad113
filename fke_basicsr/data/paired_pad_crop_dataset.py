"""Paired images zero-padded bottom/right to a fixed (H, W), then cropped at one random position.

RealBlur's second training stage (paper §4.1 B) trains on whole 776×680 frames: the frames vary in size,
so each pair is zero-padded at the bottom/right up to ``gt_size`` and cropped there when larger — the same
geometry as the RealBlur test protocol (pad to 776×680). BasicSR's PairedImageDataset only crops squares and
fails on frames smaller than the crop.
"""
from __future__ import annotations

import random

import torch.nn.functional as F
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils.registry import DATASET_REGISTRY

from fke_basicsr.registry import register


def _size(value, key: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f'{key}: expected a positive int or [H, W], got {value!r}')


@register(DATASET_REGISTRY)
class PairedPadCropDataset(PairedImageDataset):
    """PairedImageDataset whose training items are zero-padded to ``gt_size`` ([H, W] or int), then cropped.

    Outside training it returns whole images, as PairedImageDataset does. Augmentation: horizontal/vertical
    flips (``use_hflip`` / ``use_rot``); the h/w transpose of ``use_rot`` only for square crops, so every item
    keeps the (H, W) shape a batch needs.
    """

    def __init__(self, opt: dict):
        self.train_phase = opt.get('phase') == 'train'
        self.crop = _size(opt.get('gt_size'), f"datasets.{opt.get('name', 'train')}.gt_size") \
            if self.train_phase else None
        if opt.get('scale', 1) != 1:
            raise ValueError('PairedPadCropDataset pads input and target alike: use it with scale 1')
        # the parent reads whole, aligned pairs when it is not in the train phase; cropping is done here
        super().__init__({**opt, 'phase': 'val' if self.train_phase else opt.get('phase')})

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        if not self.train_phase:
            return item
        gt, lq = item['gt'], item['lq']
        (h, w), (th, tw) = gt.shape[-2:], self.crop
        pad = (0, max(0, tw - w), 0, max(0, th - h))
        if any(pad):
            gt, lq = F.pad(gt, pad), F.pad(lq, pad)
        top = random.randint(0, gt.shape[-2] - th)
        left = random.randint(0, gt.shape[-1] - tw)
        gt, lq = gt[:, top:top + th, left:left + tw], lq[:, top:top + th, left:left + tw]
        if self.opt.get('use_hflip', False) and random.random() < 0.5:
            gt, lq = gt.flip(-1), lq.flip(-1)
        if self.opt.get('use_rot', False):
            if random.random() < 0.5:
                gt, lq = gt.flip(-2), lq.flip(-2)
            if th == tw and random.random() < 0.5:
                gt, lq = gt.transpose(-2, -1), lq.transpose(-2, -1)
        item['gt'], item['lq'] = gt.contiguous(), lq.contiguous()
        return item

