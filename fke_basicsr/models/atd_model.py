"""ATDModel: ATD's model name, so ATD's own option files (``model_type: ATDModel``) run unchanged.

ATD's ATDModel is BasicSR's SRModel plus optional fp16 autocast in training (``train.use_fp16``); at test time it
runs the whole image through the network, which pads to its window size itself. Our RestorationModel does the
same (it pads to the network's ``size_multiple``, 1 for ATD, and adds AdamW, which ATD's files use), so ATDModel
is RestorationModel under ATD's name, with ``train.use_fp16: true`` read as ``train.amp: fp16``
(docs/migrating.md).
"""
from __future__ import annotations

from typing import Mapping

from basicsr.utils.registry import MODEL_REGISTRY

from fke_basicsr.models.restoration_model import TRAIN_KEYS, RestorationModel
from fke_basicsr.registry import register

__all__ = ['ATDModel']


@register(MODEL_REGISTRY)
class ATDModel(RestorationModel):
    """RestorationModel under ATD's name; ``train.use_fp16`` = ``train.amp: fp16`` (ATD's option)."""

    train_keys = TRAIN_KEYS | {'use_fp16'}

    @classmethod
    def check_options(cls, opt: Mapping) -> None:
        train = opt.get('train') or {}
        if 'use_fp16' in train and 'amp' in train:
            raise ValueError('train.use_fp16 and train.amp: give one of them (use_fp16: true = amp: fp16)')
        super().check_options(opt)

    def init_training_settings(self) -> None:
        train = self.opt['train']
        if 'use_fp16' in train:
            train['amp'] = 'fp16' if train.pop('use_fp16') else 'off'
        super().init_training_settings()
