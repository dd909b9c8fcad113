"""RealBlur evaluation (docs/evaluation.md, Table 2): aligned PSNR/SSIM after brightness gain + ECC homography,
and the "not aligned" columns.

Aligned (official RealBlur / Restormer / EVSSM / DeepRFTv2 protocol), on [0,1] float images:
  1. gain α = Σ(x·z)/Σ(z·z), z_s = α·z (the prediction is scaled, never the ground truth);
  2. ECC homography between gray(x) (template) and gray(z_s), 100 iterations, ε=0, Gaussian pre-filter 5;
  3. z_s warped onto x (bicubic, inverse map, reflect border); validity mask m warped (nearest, constant 0);
  4. masked PSNR Σ(x_r−z_r)²/Σm; SSIM = skimage Gaussian SSIM map × m, 5-px border crop, Σ(map·m)/Σm per channel.
An ECC failure is never replaced silently: ``on_failure='raise'`` raises ``AlignmentError``; ``'unaligned'``
(DeepRFTv2's behaviour) scores that image without gain/warp, logs a warning and counts it in
``ALIGNMENT_FAILURES`` so reports can state how many images fell back.
Not aligned: P-RGB-u8 PSNR (``calculate_psnr_rgb``) and S-3D SSIM (``calculate_ssim_matlab``) on the uint8
images — the non-aligned SSIM implementation is the best reading of the authors' scripts (unverified).
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from basicsr.utils.registry import METRIC_REGISTRY

from fke_basicsr.metrics.metric_util import accepts_better, check_pair, to_unit_float
from fke_basicsr.metrics.psnr_metric import psnr_from_mse
from fke_basicsr.registry import register

PROTOCOL_ALIGNED = 'RealBlur-aligned (gain + ECC homography, masked PSNR / masked Gaussian SSIM, 5-px crop)'
PROTOCOL_UNALIGNED = 'RealBlur-not-aligned (P-RGB-u8 PSNR, S-3D SSIM)'
_SSIM_CROP = int(3.5 * 1.5 + 0.5)  # skimage's Gaussian radius for sigma 1.5: border where the map is padded

logger = logging.getLogger('basicsr')


class AlignmentError(RuntimeError):
    """ECC did not converge for one image pair."""


@dataclass
class AlignmentFailures:
    """Running record of ECC failures that fell back to unaligned scoring (reported, never hidden)."""
    count: int = 0
    names: list = field(default_factory=list)

    def add(self, name: str) -> None:
        self.count += 1
        self.names.append(name)

    def reset(self) -> None:
        self.count = 0
        self.names.clear()


ALIGNMENT_FAILURES = AlignmentFailures()


@dataclass
class Alignment:
    """Result of aligning a prediction onto its ground truth."""
    gt: np.ndarray          # x ⊙ m, H×W×3 float32 in [0,1]
    pred: np.ndarray        # warp(α·z) ⊙ m
    mask: np.ndarray        # m, H×W×3 float32 in {0,1}
    gain: float             # α
    warp: np.ndarray        # 3×3 homography W (maps GT pixel coords to prediction coords)
    cc: float               # ECC correlation coefficient (nan when aligned=False)
    aligned: bool           # False when ECC failed and the pair was scored unaligned


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def align(pred_rgb: np.ndarray, gt_rgb: np.ndarray, iterations: int = 100, eps: float = 0.0,
          gauss_filt_size: int = 5) -> Alignment:
    """Gain + ECC homography alignment of the prediction onto the ground truth (RGB, [0,1] or uint8).

    Raises ``AlignmentError`` when ``cv2.findTransformECC`` fails to converge.
    """
    z = to_unit_float(pred_rgb, 'pred').astype(np.float32)
    x = to_unit_float(gt_rgb, 'gt').astype(np.float32)
    if x.ndim != 3 or x.shape[2] != 3 or x.shape != z.shape:
        raise ValueError(f'RealBlur alignment needs two H×W×3 images of one size, got {z.shape} and {x.shape}')
    zz = float(np.sum(z.astype(np.float64) ** 2))
    gain = float(np.sum(x.astype(np.float64) * z) / zz) if zz > 0 else 1.0
    zs = (gain * z).astype(np.float32)
    warp = np.eye(3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, eps)
    try:
        cc, warp = cv2.findTransformECC(_gray(x), _gray(zs), warp, cv2.MOTION_HOMOGRAPHY, criteria, None,
                                        gauss_filt_size)
    except cv2.error as err:
        raise AlignmentError(f'ECC alignment did not converge: {str(err).strip().splitlines()[-1]}') from err
    h, w = x.shape[:2]
    zr = cv2.warpPerspective(zs, warp, (w, h), flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpPerspective(np.ones_like(zs), warp, (w, h), flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return Alignment(gt=x * mask, pred=zr * mask, mask=mask, gain=gain, warp=warp, cc=float(cc), aligned=True)


def unaligned(pred_rgb: np.ndarray, gt_rgb: np.ndarray) -> Alignment:
    """The fallback 'alignment' (no gain, identity warp, full mask) used when ECC fails."""
    z = to_unit_float(pred_rgb, 'pred').astype(np.float32)
    x = to_unit_float(gt_rgb, 'gt').astype(np.float32)
    return Alignment(gt=x, pred=z, mask=np.ones_like(x), gain=1.0, warp=np.eye(3, dtype=np.float32),
                     cc=math.nan, aligned=False)


def masked_psnr(a: Alignment) -> float:
    """PSNR = 10·log10(1 / (Σ(x_r − z_r)² / Σm)) (peak 1)."""
    err = float(np.sum((a.gt.astype(np.float64) - a.pred) ** 2)) / float(np.sum(a.mask, dtype=np.float64))
    return psnr_from_mse(err, 1.0)


def masked_ssim(a: Alignment) -> float:
    """skimage Gaussian SSIM map (population covariance) × mask, 5-px crop, masked mean per channel, averaged."""
    _, smap = structural_similarity(a.gt, a.pred, channel_axis=2, gaussian_weights=True,
                                    use_sample_covariance=False, data_range=1.0, full=True)
    r = _SSIM_CROP
    smap = (smap * a.mask)[r:-r, r:-r]
    m = a.mask[r:-r, r:-r]
    per_channel = smap.sum(axis=(0, 1), dtype=np.float64) / m.sum(axis=(0, 1), dtype=np.float64)
    return float(np.mean(per_channel))


def realblur_scores(pred_rgb: np.ndarray, gt_rgb: np.ndarray, on_failure: str = 'unaligned',
                    name: str = '?') -> dict:
    """Aligned PSNR/SSIM of one RGB pair, plus the alignment diagnostics (gain, warp, cc, aligned)."""
    if on_failure not in ('raise', 'unaligned'):
        raise ValueError(f"on_failure must be 'raise' or 'unaligned', got {on_failure!r}")
    try:
        a = align(pred_rgb, gt_rgb)
    except AlignmentError as err:
        if on_failure == 'raise':
            raise AlignmentError(f'{name}: {err}') from err
        ALIGNMENT_FAILURES.add(name)
        logger.warning(f'RealBlur ECC alignment failed for {name}; scored unaligned '
                       f'({ALIGNMENT_FAILURES.count} failure(s) so far): {err}')
        a = unaligned(pred_rgb, gt_rgb)
    return {'psnr': masked_psnr(a), 'ssim': masked_ssim(a), 'gain': a.gain, 'warp': a.warp, 'cc': a.cc,
            'aligned': a.aligned}


# BasicSR calls PSNR and SSIM separately with the same pair: remember the last alignment to run ECC once.
_CACHE: dict = {}


def _cached_scores(img: np.ndarray, img2: np.ndarray, input_order: str, on_failure: str) -> dict:
    pred, gt = check_pair(img, img2, input_order)
    if pred.shape[2] != 3:
        raise ValueError(f'RealBlur metrics need 3-channel images, got {pred.shape[2]} channels')
    key = (hashlib.blake2b(np.ascontiguousarray(pred).tobytes(), digest_size=16).digest(),
           hashlib.blake2b(np.ascontiguousarray(gt).tobytes(), digest_size=16).digest(), pred.shape, on_failure)
    if key not in _CACHE:
        _CACHE.clear()
        # BasicSR hands over BGR (tensor2img); the protocol's gray conversion expects RGB.
        _CACHE[key] = realblur_scores(pred[..., ::-1], gt[..., ::-1], on_failure)
    return _CACHE[key]


def _registered_score(metric: str, img, img2, input_order: str, on_failure: str, crop_border: int,
                      kwargs: dict) -> float:
    """Shared body of the two registered RealBlur metrics: reject options the protocol has no room for."""
    if kwargs or crop_border:
        raise ValueError(f'calculate_realblur_{metric} takes no crop_border or other options besides input_order, '
                         f'on_failure; got {sorted(kwargs) + (["crop_border"] if crop_border else [])}')
    return _cached_scores(img, img2, input_order, on_failure)[metric]


@register(METRIC_REGISTRY)
@accepts_better
def calculate_realblur_psnr(img: np.ndarray, img2: np.ndarray, input_order: str = 'HWC',
                            on_failure: str = 'unaligned', crop_border: int = 0, **kwargs) -> float:
    """Aligned RealBlur PSNR of prediction ``img`` vs ground truth ``img2`` (uint8 **BGR**, BasicSR convention)."""
    return _registered_score('psnr', img, img2, input_order, on_failure, crop_border, kwargs)


@register(METRIC_REGISTRY)
@accepts_better
def calculate_realblur_ssim(img: np.ndarray, img2: np.ndarray, input_order: str = 'HWC',
                            on_failure: str = 'unaligned', crop_border: int = 0, **kwargs) -> float:
    """Aligned RealBlur SSIM of prediction ``img`` vs ground truth ``img2`` (uint8 **BGR**, BasicSR convention)."""
    return _registered_score('ssim', img, img2, input_order, on_failure, crop_border, kwargs)
