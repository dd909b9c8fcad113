"""Protocol-exact metrics (docs/evaluation.md): MATLAB-style SSIM, RGB PSNR, RealBlur alignment, DPDD, LPIPS."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import fke_basicsr  # noqa: F401  (registration + compat before basicsr)
from basicsr.metrics import calculate_metric, calculate_ssim as basicsr_ssim
from basicsr.utils.registry import METRIC_REGISTRY

from fke_basicsr.metrics import dpdd_metric, realblur_metric
from fke_basicsr.metrics.metric_util import mean_of_images, weighted_mean
from fke_basicsr.metrics.psnr_metric import calculate_psnr_rgb
from fke_basicsr.metrics.ssim_metric import calculate_ssim_channelwise, calculate_ssim_matlab

torch.set_num_threads(2)
MATLAB_PAIR = Path(__file__).resolve().parent / 'data' / 'matlab_ssim_example'


def _texture(seed: int, h: int = 48, w: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(img * 200 + 30).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- SSIM / PSNR
def test_matlab_reference_pair():
    pred = cv2.imread(str(MATLAB_PAIR / 'car_pred.jpeg'))
    gt = cv2.imread(str(MATLAB_PAIR / 'car_gt.jpeg'))
    assert abs(calculate_ssim_matlab(pred, gt) - 0.8433) <= 1e-4          # MATLAB ssim(pred, gt) on RGB
    assert abs(calculate_ssim_channelwise(pred, gt) - 0.7577) <= 1e-4     # per-channel, as documented
    assert abs(calculate_ssim_channelwise(pred, gt) - basicsr_ssim(pred, gt, 0)) < 1e-10  # == BasicSR stock


def _ssim3d_torch(x: np.ndarray, y: np.ndarray, peak: float) -> float:
    """Independent S-3D: float64 conv3d with an outer-product 11×11×11 kernel and replicate padding."""
    g = cv2.getGaussianKernel(11, 1.5).ravel()
    k = torch.from_numpy(np.einsum('i,j,k->ijk', g, g, g))[None, None]
    to = lambda a: torch.from_numpy(a.astype(np.float64))[None, None]  # noqa: E731  (H, W, C as a volume)

    def f(t):
        return torch.nn.functional.conv3d(torch.nn.functional.pad(t, (5,) * 6, mode='replicate'), k)
    X, Y = to(x), to(y)
    mx, my = f(X), f(Y)
    sxx, syy, sxy = f(X * X) - mx ** 2, f(Y * Y) - my ** 2, f(X * Y) - mx * my
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return float(m.mean())


def test_ssim3d_matches_conv3d_reference_and_is_channel_order_free():
    gt = _texture(0)
    pred = np.clip(gt.astype(int) + np.random.default_rng(1).integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    ours = calculate_ssim_matlab(pred, gt)
    assert abs(ours - _ssim3d_torch(pred, gt, 255.0)) < 1e-10
    assert abs(ours - calculate_ssim_matlab(pred[..., ::-1], gt[..., ::-1])) < 1e-12
    assert calculate_ssim_matlab(gt, gt) == pytest.approx(1.0, abs=1e-12)
    assert calculate_ssim_matlab(pred.astype(np.float64) / 255, gt.astype(np.float64) / 255, data_range=1.0) \
        == pytest.approx(ours, abs=1e-12)
    with pytest.raises(ValueError, match='data_range'):
        calculate_ssim_matlab(pred.astype(np.float32), gt.astype(np.float32))


def test_psnr_known_offset_identical_inf_and_inf_counted():
    gt = _texture(2)
    assert calculate_psnr_rgb(gt + np.uint8(3), gt) == pytest.approx(20 * math.log10(255 / 3), abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no divide-by-zero RuntimeWarning
        assert calculate_psnr_rgb(gt, gt) == math.inf
    agg = mean_of_images([30.0, math.inf, 32.0])
    assert agg.mean == math.inf and agg.n_nonfinite == 1 and agg.count == 3 and 'not finite' in str(agg)
    with pytest.raises(ValueError, match='same shape'):
        calculate_psnr_rgb(gt, gt[:-1])


def test_registered_metrics_follow_basicsr_call_convention():
    gt = _texture(3)
    sr = np.clip(gt.astype(int) + 4, 0, 255).astype(np.uint8)
    data = {'img': sr, 'img2': gt}
    for name in ('calculate_psnr_rgb', 'calculate_ssim_matlab', 'calculate_ssim_channelwise',
                 'calculate_realblur_psnr', 'calculate_realblur_ssim', 'calculate_dpdd_psnr', 'calculate_dpdd_ssim',
                 'calculate_mae', 'calculate_lpips'):
        assert METRIC_REGISTRY.get(name) is not None
    assert calculate_metric(data, {'type': 'calculate_psnr_rgb', 'crop_border': 0}) == calculate_psnr_rgb(sr, gt)
    assert calculate_metric(data, {'type': 'calculate_ssim_matlab'}) == calculate_ssim_matlab(sr, gt)
    assert calculate_metric(data, {'type': 'calculate_mae'}) == pytest.approx(4 / 255, abs=1e-12)
    with pytest.raises(ValueError, match='Y-channel'):
        calculate_metric(data, {'type': 'calculate_psnr_rgb', 'test_y_channel': True})


# ----------------------------------------------------------------------------------------------- RealBlur
H_TRUE = np.array([[1.0, 0.01, 1.5], [-0.008, 1.0, -0.7], [1e-5, 0.0, 1.0]])
GAIN = 0.9


def _realblur_case(error_level: float):
    """GT (smooth, natural-image-like: the protocol estimates the gain *before* the warp, which is only unbiased
    on content that is smooth at the scale of the misalignment); a prediction = GT + smooth restoration error
    of ``error_level`` grey levels; that prediction seen through the known homography H_TRUE and gain GAIN."""
    rng = np.random.default_rng(0)
    h, w = 160, 144
    yy, xx = np.mgrid[0:h, 0:w]
    n = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 4.0)
    n = (n - n.min()) / (n.max() - n.min())
    base = 0.5 + 0.25 * (np.sin(xx / 9.0) * np.cos(yy / 13.0))[..., None] + 0.5 * (n - 0.5)
    gt = np.round(255 * np.clip(0.8 * base + 0.1, 0, 1)).astype(np.uint8)
    err = cv2.GaussianBlur(rng.normal(0, 1, gt.shape).astype(np.float32), (0, 0), 2.0)
    pred0 = np.clip(gt + error_level * err / err.std(), 0, 255)
    moved = cv2.warpPerspective((GAIN * pred0).astype(np.float32), H_TRUE, (w, h), flags=cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_REFLECT)
    return gt, np.round(pred0).astype(np.uint8), np.clip(np.round(moved), 0, 255).astype(np.uint8)


def test_realblur_alignment_recovers_known_homography_and_gain():
    gt, _, moved = _realblur_case(0.0)
    s = realblur_metric.realblur_scores(moved[..., ::-1], gt[..., ::-1], on_failure='raise')
    # the protocol estimates the gain before the warp; on smooth content that is within 1% of the truth
    assert s['aligned'] and s['gain'] == pytest.approx(1 / GAIN, rel=0.01)
    W = s['warp'] / s['warp'][2, 2]
    h, w = gt.shape[:2]
    pts = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1], [w / 2, h / 2, 1]], float).T
    proj = lambda M: (M @ pts)[:2] / (M @ pts)[2]  # noqa: E731
    assert np.abs(proj(W) - proj(H_TRUE)).max() < 0.15  # px, at the corners and the centre


def test_realblur_aligned_psnr_matches_unwarped_truth():
    gt, pred0, moved = _realblur_case(5.0)
    s = realblur_metric.realblur_scores(moved[..., ::-1], gt[..., ::-1], on_failure='raise')
    truth = calculate_psnr_rgb(pred0, gt)
    assert abs(s['psnr'] - truth) < 0.05
    assert s['psnr'] > calculate_psnr_rgb(moved, gt) + 5  # aligned ≫ raw
    # registered BGR functions give the same numbers (ECC runs once thanks to the cache)
    assert realblur_metric.calculate_realblur_psnr(moved, gt) == pytest.approx(s['psnr'], abs=1e-9)
    assert realblur_metric.calculate_realblur_ssim(moved, gt) == pytest.approx(s['ssim'], abs=1e-9)


def test_realblur_identity_and_mask_one_matches_valid_ssim():
    gt = _texture(6, 64, 56)
    s = realblur_metric.realblur_scores(gt, gt, on_failure='raise')
    assert s['gain'] == pytest.approx(1.0, abs=1e-6) and np.allclose(s['warp'], np.eye(3), atol=1e-4)
    assert s['psnr'] >= 60
    pred = np.clip(gt.astype(int) + np.random.default_rng(0).integers(-9, 10, gt.shape), 0, 255).astype(np.uint8)
    a = realblur_metric.unaligned(pred, gt)  # mask ≡ 1: masked SSIM == S-2D-valid, masked PSNR == plain PSNR
    assert realblur_metric.masked_ssim(a) == pytest.approx(calculate_ssim_channelwise(pred, gt), abs=1e-5)
    assert realblur_metric.masked_psnr(a) == pytest.approx(calculate_psnr_rgb(pred, gt), abs=1e-4)


def test_realblur_ecc_failure_is_counted_never_silent():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    with pytest.raises(realblur_metric.AlignmentError, match='noise.png: ECC'):
        realblur_metric.realblur_scores(a, b, on_failure='raise', name='noise.png')
    realblur_metric.ALIGNMENT_FAILURES.reset()
    s = realblur_metric.realblur_scores(a, b, name='noise.png')
    assert not s['aligned'] and math.isnan(s['cc'])
    assert realblur_metric.ALIGNMENT_FAILURES.count == 1 and realblur_metric.ALIGNMENT_FAILURES.names == ['noise.png']
    assert s['psnr'] == pytest.approx(calculate_psnr_rgb(a, b), abs=1e-4)
    realblur_metric.ALIGNMENT_FAILURES.reset()


# ----------------------------------------------------------------------------------------------- DPDD
def test_dpdd_scores_and_combined_is_37_39_weighted():
    from skimage.metrics import structural_similarity
    gt = _texture(7).astype(np.float64) / 255
    pred = np.clip(gt + 0.02 * np.sin(np.arange(gt.size)).reshape(gt.shape), 0, 1)
    assert dpdd_metric.dpdd_psnr(pred, gt) == pytest.approx(10 * np.log10(1 / np.mean((pred - gt) ** 2)), abs=1e-12)
    assert dpdd_metric.mae(pred, gt) == pytest.approx(np.mean([np.mean(np.abs(pred[..., c] - gt[..., c]))
                                                               for c in range(3)]), abs=1e-15)
    assert dpdd_metric.dpdd_ssim(pred, gt) == pytest.approx(
        np.mean([structural_similarity(gt[..., c], pred[..., c], data_range=1.0) for c in range(3)]), abs=1e-12)
    with pytest.raises(ValueError, match=r'expected \[0,1\]'):
        dpdd_metric.dpdd_psnr(pred * 255, gt)
    rng = np.random.default_rng(8)
    names = [f'im{i}' for i in range(76)]
    per = {n: {'PSNR': float(rng.uniform(20, 32)), 'MAE': float(rng.uniform(0.01, 0.06))} for n in names}
    indoor, outdoor = names[:37], names[37:]
    s = dpdd_metric.dpdd_summary(per, indoor, outdoor)
    for m in ('PSNR', 'MAE'):
        i, o = np.mean([per[n][m] for n in indoor]), np.mean([per[n][m] for n in outdoor])
        assert s['combined'][m].mean == pytest.approx((37 * i + 39 * o) / 76, abs=1e-12)
        assert s['combined'][m].mean == pytest.approx(np.mean([per[n][m] for n in names]), abs=1e-12)
        assert s['combined'][m].count == 76
    # the paper's own rows pass the same check (DeepRFTv2-S, Table 4 PSNR)
    assert weighted_mean([mean_of_images([29.50] * 37), mean_of_images([23.73] * 39)]).mean == \
        pytest.approx(26.54, abs=0.005)
    with pytest.raises(ValueError, match='both indoor and outdoor'):
        dpdd_metric.dpdd_summary(per, names[:40], names[36:])


def test_lpips_needs_a_local_weight_file(tmp_path, monkeypatch):
    monkeypatch.delenv(dpdd_metric.LPIPS_ENV, raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty_torch_home'))
    with pytest.raises((FileNotFoundError, ImportError), match=r'FKE_LPIPS_ALEXNET|pip install lpips'):
        dpdd_metric.build_lpips()
    with pytest.raises((FileNotFoundError, ImportError), match=r'not found at .*missing\.pth|pip install lpips'):
        dpdd_metric.build_lpips(tmp_path / 'missing.pth')


def test_lpips_alexnet_from_local_file_matches_lpips_package(tmp_path, monkeypatch):
    lpips = pytest.importorskip('lpips', reason='the optional lpips package is not installed')
    import torchvision

    def no_download(*a, **k):
        raise AssertionError('LPIPS tried to download weights')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_download)
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()  # random trunk: no real weights needed
    path = tmp_path / 'alexnet.pth'
    torch.save(state, path)
    with pytest.raises(ValueError, match='SHA-256 starts with'):
        dpdd_metric.build_lpips(path)  # a random trunk is not torchvision's file
    model = dpdd_metric.build_lpips(path, verify_hash=False)
    x = _texture(9, 32, 32)
    y = np.clip(x.astype(int) + 25, 0, 255).astype(np.uint8)
    d = dpdd_metric.lpips_rgb(y, x, model=model)
    assert dpdd_metric.lpips_rgb(x, x, model=model) == pytest.approx(0.0, abs=1e-7)
    assert dpdd_metric.lpips_rgb(x, y, model=model) == pytest.approx(d, abs=1e-7) and d > 0
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ref = lpips.LPIPS(net='alex', version='0.1', pretrained=True, pnet_rand=True, verbose=False)
    ref.net.load_state_dict({k: state['features.' + k.split('.', 1)[1]] for k, _ in ref.net.named_parameters()})
    t = lambda a: torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32) / 255)[None]  # noqa: E731
    assert float(ref(t(x), t(y), normalize=True)) == pytest.approx(d, abs=1e-6)
    monkeypatch.setenv(dpdd_metric.LPIPS_ENV, str(path))
    assert dpdd_metric.resolve_alexnet_weights() == path


def test_registered_metrics_take_basicsrs_better_option_through_calculate_metric():
    """BasicSR passes every metric option, `better` included, to the function (options/*/DPDD use better: lower)."""
    from basicsr.metrics import calculate_metric
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-9, 10, gt.shape), 0, 255).astype(np.uint8)
    for name in ('calculate_psnr_rgb', 'calculate_ssim_matlab', 'calculate_ssim_channelwise', 'calculate_mae',
                 'calculate_dpdd_psnr', 'calculate_dpdd_ssim', 'calculate_realblur_psnr', 'calculate_realblur_ssim'):
        plain = calculate_metric({'img': pred, 'img2': gt}, {'type': name})
        ranked = calculate_metric({'img': pred, 'img2': gt}, {'type': name, 'better': 'lower'})
        assert np.isfinite(plain) and ranked == plain, name
    with pytest.raises(ValueError, match='better'):
        calculate_metric({'img': pred, 'img2': gt}, {'type': 'calculate_mae', 'better': 'smaller'})
