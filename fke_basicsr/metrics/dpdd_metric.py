"""DPDD single-image defocus deblurring metrics (docs/evaluation.md, Table 4: float PSNR, scikit-image SSIM,
MAE, LPIPS — Restormer's ``test_single_image_defocus_deblur.py`` protocol).

All scores are on [0,1] RGB images; the protocol scores the clamped *float* prediction (not quantised) against
the 8-bit ground truth / 255. The registered functions receive BasicSR's uint8 BGR images (quantised, for
validation during training); pass float arrays to the plain functions for the exact protocol.

LPIPS (AlexNet, v0.1, ``normalize=True``) uses the optional ``lpips`` package for its linear heads and reads
the AlexNet trunk from a local file named by the user — nothing is ever downloaded.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from skimage.metrics import structural_similarity

from basicsr.utils.registry import METRIC_REGISTRY

from fke_basicsr.metrics.metric_util import (accepts_better, Aggregate, check_pair, mean_of_images,
                                               to_unit_float, weighted_mean)
from fke_basicsr.metrics.psnr_metric import psnr_from_mse
from fke_basicsr.registry import register

PROTOCOL = 'DPDD (P-float PSNR, skimage default SSIM, MAE on [0,1]; LPIPS AlexNet v0.1 normalize=True)'
DPDD_COUNTS = {'indoor': 37, 'outdoor': 39}  # the paper's combined = (37·indoor + 39·outdoor) / 76
LPIPS_ENV = 'FKE_LPIPS_ALEXNET'
ALEXNET_FILE = 'alexnet-owt-7be5be79.pth'
ALEXNET_URL = 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth'


def _unit_pair(img, img2, input_order: str = 'HWC') -> tuple[np.ndarray, np.ndarray]:
    img, img2 = check_pair(img, img2, input_order)
    return to_unit_float(img, 'img'), to_unit_float(img2, 'img2')


def dpdd_psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """P-float: 10·log10(1/MSE) on [0,1] images; ``inf`` when identical (Restormer returns 100 there)."""
    x, y = _unit_pair(pred, gt)
    return psnr_from_mse(float(np.mean((x - y) ** 2)), 1.0)


def dpdd_ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """S-sk-uniform: skimage defaults (7×7 uniform window, sample covariance), data_range 1, per channel."""
    x, y = _unit_pair(pred, gt)
    return float(structural_similarity(y, x, data_range=1.0, channel_axis=2))


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error over H·W·C on [0,1] images (== per-channel sklearn MAE averaged)."""
    x, y = _unit_pair(pred, gt)
    return float(np.mean(np.abs(x - y)))


@register(METRIC_REGISTRY)
@accepts_better
def calculate_dpdd_psnr(img: np.ndarray, img2: np.ndarray, input_order: str = 'HWC') -> float:
    """DPDD PSNR of prediction ``img`` vs ground truth ``img2`` (any channel order)."""
    return dpdd_psnr(*check_pair(img, img2, input_order))


@register(METRIC_REGISTRY)
@accepts_better
def calculate_dpdd_ssim(img: np.ndarray, img2: np.ndarray, input_order: str = 'HWC') -> float:
    """DPDD SSIM (skimage default window) of prediction ``img`` vs ground truth ``img2`` (any channel order)."""
    return dpdd_ssim(*check_pair(img, img2, input_order))


@register(METRIC_REGISTRY)
@accepts_better
def calculate_mae(img: np.ndarray, img2: np.ndarray, input_order: str = 'HWC') -> float:
    """MAE on [0,1] of prediction ``img`` vs ground truth ``img2``."""
    return mae(*check_pair(img, img2, input_order))


# ------------------------------------------------------------------------------------------------- LPIPS
def _how_to_provide() -> str:
    return (f'LPIPS (AlexNet, v0.1) needs torchvision\'s ImageNet AlexNet weights as a local file; nothing is '
            f'downloaded. Fetch {ALEXNET_URL} once on a machine with internet access, copy it here, then pass '
            f'its path (metric option `alexnet_weights`, or reproduce_tables.py --lpips-alexnet PATH) or set '
            f'{LPIPS_ENV}=PATH. The linear heads come from the optional `lpips` package (pip install lpips).')


def resolve_alexnet_weights(path: str | os.PathLike | None = None) -> Path:
    """The AlexNet trunk file: ``path``, else ``$FKE_LPIPS_ALEXNET``, else torch hub's local cache; never fetched."""
    if path is None:
        path = os.environ.get(LPIPS_ENV)
    if path is None:
        import torch
        cached = Path(torch.hub.get_dir()) / 'checkpoints' / ALEXNET_FILE
        if cached.is_file():
            return cached
        raise FileNotFoundError(_how_to_provide())
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f'AlexNet weights not found at {p}. ' + _how_to_provide())
    return p


def _check_sha256_prefix(path: Path) -> None:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    if not digest.hexdigest().startswith('7be5be79'):
        raise ValueError(f'{path} is not torchvision\'s {ALEXNET_FILE} (SHA-256 starts with '
                         f'{digest.hexdigest()[:8]}, expected 7be5be79). ' + _how_to_provide())


_LPIPS_MODELS: dict = {}


def build_lpips(alexnet_weights: str | os.PathLike | None = None, device: str = 'cpu', verify_hash: bool = True):
    """LPIPS(net='alex', version='0.1') with the AlexNet trunk loaded strictly from a local file (cached)."""
    try:
        import lpips
    except ImportError as err:
        raise ImportError('LPIPS needs the optional `lpips` package: pip install lpips. ' + _how_to_provide()) \
            from err
    path = resolve_alexnet_weights(alexnet_weights)
    key = (str(path.resolve()), str(device), verify_hash)
    if key in _LPIPS_MODELS:
        return _LPIPS_MODELS[key]
    if verify_hash:
        _check_sha256_prefix(path)
    import torch
    # pnet_rand=True builds the trunk without weights (no torchvision download); pretrained=True still loads
    # the v0.1 linear heads shipped inside the lpips wheel.
    with warnings.catch_warnings():  # torchvision's 'pretrained' deprecation notices inside lpips
        warnings.simplefilter('ignore', UserWarning)
        model = lpips.LPIPS(net='alex', version='0.1', pretrained=True, pnet_rand=True, verbose=False)
    state = torch.load(path, map_location='cpu', weights_only=True)
    trunk = {}
    for name, _ in model.net.named_parameters():  # 'slice2.3.weight' holds torchvision's 'features.3.weight'
        src = 'features.' + name.split('.', 1)[1]
        if src not in state:
            raise ValueError(f'{path} has no key {src!r}: not a torchvision AlexNet state dict. ' + _how_to_provide())
        trunk[name] = state[src]
    model.net.load_state_dict(trunk, strict=True)
    model = model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    _LPIPS_MODELS[key] = model
    return model


def lpips_rgb(pred_rgb: np.ndarray, gt_rgb: np.ndarray, alexnet_weights=None, device: str = 'cpu',
              model=None) -> float:
    """LPIPS between RGB images ([0,1] floats or uint8), ``normalize=True`` as Restormer's DPDD script."""
    import torch
    x, y = _unit_pair(pred_rgb, gt_rgb)
    if x.shape[2] != 3:
        raise ValueError(f'LPIPS needs 3-channel RGB images, got {x.shape[2]} channels')
    model = model if model is not None else build_lpips(alexnet_weights, device)
    dev = next(model.parameters()).device
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))).float()[None].to(dev)
    ty = torch.from_numpy(np.ascontiguousarray(y.transpose(2, 0, 1))).float()[None].to(dev)
    with torch.no_grad():
        return float(model(ty, tx, normalize=True).item())


@register(METRIC_REGISTRY)
@accepts_better
def calculate_lpips(img: np.ndarray, img2: np.ndarray, input_order: str = 'HWC', alexnet_weights: str | None = None,
                    device: str = 'cpu') -> float:
    """LPIPS-Alex of prediction ``img`` vs ground truth ``img2`` given as **BGR** (BasicSR convention)."""
    img, img2 = check_pair(img, img2, input_order)
    return lpips_rgb(img[..., ::-1], img2[..., ::-1], alexnet_weights, device)


# ------------------------------------------------------------------------------------------------- grouping
def dpdd_summary(per_image: Mapping[str, Mapping[str, float]], indoor: Iterable[str], outdoor: Iterable[str]
                 ) -> dict[str, dict[str, Aggregate]]:
    """Indoor / outdoor means and the combined score = image-count-weighted mean of the two (docs/evaluation.md).

    ``per_image`` maps image name -> {metric: value}; every name must belong to exactly one group.
    """
    indoor, outdoor = list(indoor), list(outdoor)
    overlap = set(indoor) & set(outdoor)
    if overlap:
        raise ValueError(f'images listed as both indoor and outdoor: {sorted(overlap)[:5]}')
    missing = (set(indoor) | set(outdoor)) ^ set(per_image)
    if missing:
        raise ValueError(f'per_image and the indoor/outdoor lists disagree on {len(missing)} image(s), e.g. '
                         f'{sorted(missing)[:5]}')
    metrics = sorted({m for scores in per_image.values() for m in scores})
    out: dict[str, dict[str, Aggregate]] = {'indoor': {}, 'outdoor': {}, 'combined': {}}
    for m in metrics:
        g_in = mean_of_images(per_image[n][m] for n in indoor)
        g_out = mean_of_images(per_image[n][m] for n in outdoor)
        out['indoor'][m], out['outdoor'][m] = g_in, g_out
        out['combined'][m] = weighted_mean([g_in, g_out])
    return out
