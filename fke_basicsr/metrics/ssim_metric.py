"""SSIM variants of docs/evaluation.md, Metrics.

* S-3D ("MATLAB RGB", ``calculate_ssim_matlab``): MATLAB ``ssim`` on an H×W×3 uint8 array treats it as a
  volume — the 11-tap σ=1.5 Gaussian runs along height, width *and* channel with replicate padding, and the
  full map is averaged. This is the GoPro / HIDE / REDS protocol (Restormer's MATLAB script, NAFNet's
  ``ssim3d``, DeepRFTv2's ``psnr_ssim_1``); it reproduces MATLAB's 0.8433 on the reference pair.
* S-2D-valid (``calculate_ssim_channelwise``): BasicSR's stock SSIM — per channel 2-D Gaussian, only the
  "valid" region (5 px cropped per side), channel means averaged. Kept for comparison (0.7577 on that pair).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

from basicsr.utils.registry import METRIC_REGISTRY

from fke_basicsr.metrics.metric_util import accepts_better, check_pair, peak_of
from fke_basicsr.registry import register

PROTOCOL_3D = 'S-3D (MATLAB ssim on RGB volume, 11-tap Gaussian σ=1.5 on H,W,C, replicate pad)'
PROTOCOL_2D = 'S-2D-valid (BasicSR per-channel Gaussian SSIM, valid region)'


def gaussian_taps(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian (== cv2.getGaussianKernel(11, 1.5)), float64."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def _ssim_map(x: np.ndarray, y: np.ndarray, peak: float, blur) -> np.ndarray:
    """SSIM map with population statistics from the local-mean operator ``blur`` (C1=(.01L)², C2=(.03L)²)."""
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return num / den


def ssim_3d(x: np.ndarray, y: np.ndarray, peak: float) -> float:
    """S-3D on H×W×C float64 arrays: separable Gaussian along all three axes, 'nearest' (replicate) padding."""
    g = gaussian_taps()

    def blur(a: np.ndarray) -> np.ndarray:
        for axis in range(3):
            a = correlate1d(a, g, axis=axis, mode='nearest')
        return a

    return float(_ssim_map(x, y, peak, blur).mean())


def ssim_2d_valid(x: np.ndarray, y: np.ndarray, peak: float) -> float:
    """S-2D-valid on H×W×C float64 arrays: per-channel Gaussian SSIM, 5-px border dropped, channels averaged."""
    g = gaussian_taps()
    r = len(g) // 2
    if min(x.shape[:2]) <= 2 * r:
        raise ValueError(f'S-2D-valid needs images larger than {2 * r}×{2 * r}, got {x.shape[0]}×{x.shape[1]}')

    def blur(a: np.ndarray) -> np.ndarray:
        a = correlate1d(correlate1d(a, g, axis=0, mode='nearest'), g, axis=1, mode='nearest')
        return a[r:-r, r:-r]  # 'valid' part: the padding mode never reaches the kept pixels

    return float(np.mean([_ssim_map(x[..., c], y[..., c], peak, blur).mean() for c in range(x.shape[2])]))


def _prepared(img, img2, crop_border, input_order, data_range, kwargs, fn_name):
    if kwargs.pop('test_y_channel', False):
        raise ValueError(f'{fn_name} is an RGB protocol; use BasicSR calculate_ssim for Y-channel SSIM')
    if kwargs:
        raise ValueError(f'{fn_name} got unexpected options {sorted(kwargs)}')
    img, img2 = check_pair(img, img2, input_order, crop_border)
    peak = peak_of(img, data_range, 'img')
    peak_of(img2, data_range, 'img2')
    return img.astype(np.float64), img2.astype(np.float64), peak


@register(METRIC_REGISTRY)
@accepts_better
def calculate_ssim_matlab(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, input_order: str = 'HWC',
                          data_range: float | None = None, **kwargs) -> float:
    """MATLAB-style SSIM (S-3D) of prediction ``img`` vs ground truth ``img2``; uint8 → L=255.

    Channel order (RGB or BGR) does not matter: the channel-axis filter is symmetric with replicate padding.
    """
    x, y, peak = _prepared(img, img2, crop_border, input_order, data_range, kwargs, 'calculate_ssim_matlab')
    return ssim_3d(x, y, peak)


@register(METRIC_REGISTRY)
@accepts_better
def calculate_ssim_channelwise(img: np.ndarray, img2: np.ndarray, crop_border: int = 0,
                               input_order: str = 'HWC', data_range: float | None = None, **kwargs) -> float:
    """Per-channel SSIM (S-2D-valid, BasicSR's stock definition) of ``img`` vs ``img2``."""
    x, y, peak = _prepared(img, img2, crop_border, input_order, data_range, kwargs, 'calculate_ssim_channelwise')
    return ssim_2d_valid(x, y, peak)
