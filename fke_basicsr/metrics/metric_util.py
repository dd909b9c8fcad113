"""Input checks, explicit data ranges and safe averaging shared by the protocol metrics (docs/evaluation.md)."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

# Peak value implied by an integer dtype; floats must state theirs (never auto-detect the range: docs/evaluation.md).
_DTYPE_PEAK = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def as_hwc(img: np.ndarray, name: str, input_order: str = 'HWC') -> np.ndarray:
    """Return ``img`` as an H×W×C array (BasicSR's ``input_order`` convention), validating its shape."""
    if not isinstance(img, np.ndarray):
        raise ValueError(f'{name} must be a numpy array (H×W×C image), got {type(img).__name__}')
    if input_order not in ('HWC', 'CHW'):
        raise ValueError(f"input_order must be 'HWC' or 'CHW', got {input_order!r}")
    if img.ndim == 2:
        img = img[..., None]
    elif img.ndim == 3 and input_order == 'CHW':
        img = img.transpose(1, 2, 0)
    if img.ndim != 3:
        raise ValueError(f'{name} must be a 2-D or 3-D image array, got shape {img.shape}')
    return img


def peak_of(img: np.ndarray, data_range: float | None, name: str) -> float:
    """The peak value L of ``img``: from its integer dtype, or the explicit ``data_range`` for float arrays."""
    if data_range is not None:
        if data_range <= 0:
            raise ValueError(f'data_range must be positive, got {data_range}')
        return float(data_range)
    peak = _DTYPE_PEAK.get(img.dtype)
    if peak is None:
        raise ValueError(f'{name} has dtype {img.dtype}: pass uint8/uint16 images or give data_range '
                         '(255 for [0,255] floats, 1 for [0,1] floats) explicitly')
    return peak


def check_pair(img: np.ndarray, img2: np.ndarray, input_order: str = 'HWC', crop_border: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (prediction, ground truth) pair, bring both to HWC and crop ``crop_border`` pixels per side."""
    img = as_hwc(img, 'img', input_order)
    img2 = as_hwc(img2, 'img2', input_order)
    if img.shape != img2.shape:
        raise ValueError(f'img and img2 must have the same shape, got {img.shape} and {img2.shape}')
    if crop_border < 0:
        raise ValueError(f'crop_border must be >= 0, got {crop_border}')
    if crop_border:
        if 2 * crop_border >= min(img.shape[:2]):
            raise ValueError(f'crop_border={crop_border} leaves nothing of a {img.shape[0]}×{img.shape[1]} image')
        img = img[crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border]
    return img, img2


def to_unit_float(img: np.ndarray, name: str) -> np.ndarray:
    """Float64 image in [0,1]: integer dtypes are divided by their peak; floats must already lie in [0,1]."""
    peak = _DTYPE_PEAK.get(img.dtype)
    if peak is not None:
        return img.astype(np.float64) / peak
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f'{name} must be uint8, uint16 or a float array in [0,1], got dtype {img.dtype}')
    out = img.astype(np.float64)
    lo, hi = float(out.min()), float(out.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f'{name} is a float array with values in [{lo:.4g}, {hi:.4g}]; expected [0,1] '
                         '(clamp the prediction, or pass uint8 images)')
    return out


@dataclass(frozen=True)
class Aggregate:
    """Mean of per-image scores together with how many images were scored and how many were not finite."""
    mean: float
    count: int
    n_nonfinite: int = 0

    def __str__(self) -> str:
        note = f' ({self.n_nonfinite} of {self.count} not finite)' if self.n_nonfinite else ''
        return f'{self.mean:.4f}{note}'


def mean_of_images(values: Iterable[float]) -> Aggregate:
    """Average per-image scores (mean of per-image values, docs/evaluation.md); an inf PSNR is counted, never hidden.

    One identical pair makes the PSNR mean ``inf``; ``n_nonfinite`` says how many such images there were so a
    report can flag it instead of printing a silently dominated mean.
    """
    vals = [float(v) for v in values]
    if not vals:
        return Aggregate(math.nan, 0, 0)
    nonfinite = sum(1 for v in vals if not math.isfinite(v))
    return Aggregate(float(np.mean(np.asarray(vals, dtype=np.float64))), len(vals), nonfinite)


def weighted_mean(groups: Iterable[Aggregate]) -> Aggregate:
    """Mean over the union of several groups, each weighted by its image count (DPDD combined, docs/evaluation.md)."""
    groups = list(groups)
    total = sum(g.count for g in groups)
    if total == 0:
        return Aggregate(math.nan, 0, 0)
    mean = sum(g.mean * g.count for g in groups) / total
    return Aggregate(float(mean), total, sum(g.n_nonfinite for g in groups))


def accepts_better(fn):
    """Let a registered metric take BasicSR's ``better: higher|lower`` option, which BasicSR passes through to the
    metric function with its other options (it only ranks results; it never changes the value)."""
    @functools.wraps(fn)
    def metric(*args, better: str | None = None, **kwargs):
        if better not in (None, 'higher', 'lower'):
            raise ValueError(f"{fn.__name__}: better must be 'higher' or 'lower', got {better!r}")
        return fn(*args, **kwargs)
    return metric
