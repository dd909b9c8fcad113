"""RGB PSNR with peak 255 on uint8 images (docs/evaluation.md, Metrics): GoPro, HIDE, REDS,
RealBlur "not aligned" — identical to MATLAB ``psnr`` and skimage ``peak_signal_noise_ratio`` on uint8."""
from __future__ import annotations

import math

import numpy as np
from basicsr.utils.registry import METRIC_REGISTRY

from fke_basicsr.metrics.metric_util import accepts_better, check_pair, peak_of
from fke_basicsr.registry import register

PROTOCOL = 'P-RGB-u8'


def psnr_from_mse(mse: float, peak: float) -> float:
    """10·log10(peak²/MSE); ``inf`` for identical images (no divide-by-zero warning)."""
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


@register(METRIC_REGISTRY)
@accepts_better
def calculate_psnr_rgb(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, input_order: str = 'HWC',
                       data_range: float | None = None, **kwargs) -> float:
    """PSNR over all H·W·C values; the peak comes from the dtype (uint8 → 255) or ``data_range`` for floats.

    Returns ``inf`` for identical images; averaging code must count those (``mean_of_images``).
    ``img`` is the prediction and ``img2`` the ground truth (BasicSR's call convention); PSNR is symmetric.
    Extra keyword options that BasicSR YAMLs habitually carry (e.g. ``test_y_channel: false``) are accepted
    only when they do not change the protocol.
    """
    if kwargs.pop('test_y_channel', False):
        raise ValueError('calculate_psnr_rgb is the RGB protocol; use BasicSR calculate_psnr for Y-channel PSNR')
    if kwargs:
        raise ValueError(f'calculate_psnr_rgb got unexpected options {sorted(kwargs)}')
    img, img2 = check_pair(img, img2, input_order, crop_border)
    peak = peak_of(img, data_range, 'img')
    peak_of(img2, data_range, 'img2')
    diff = img.astype(np.float64) - img2.astype(np.float64)
    return psnr_from_mse(float(np.mean(diff * diff)), peak)
