"""SR data preparation (DF2K sub-images + LMDB, the five benchmarks) on generated fixtures, and the Y-channel
PSNR/SSIM of options/test/SR against an independent numpy implementation of BasicSR's protocol."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import fke_basicsr  # noqa: F401  (shims before basicsr)

REPO = Path(__file__).resolve().parents[1]
PREP = REPO / 'scripts' / 'data_preparation'


def _load(name: str):
    sys.path.insert(0, str(PREP))
    spec = importlib.util.spec_from_file_location(name, PREP / f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _smooth_image(rng, h: int, w: int, channels: int = 3) -> np.ndarray:
    small = rng.uniform(0, 255, (max(2, h // 8), max(2, w // 8), channels)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).round().astype(np.uint8)
    return img if channels == 3 else img[..., 0] if img.ndim == 3 else img


def _matlab_resize(img: np.ndarray, s: int) -> np.ndarray:
    from basicsr.utils.matlab_functions import imresize
    return np.clip(np.round(imresize(img.astype(np.float64) / 255.0, 1.0 / s) * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- DF2K
def test_df2k_subimages_lr_alignment_lmdb_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv('FKE_PREP_QUIET', '1')
    df2k = _load('prepare_df2k')
    rng = np.random.default_rng(0)
    div2k, flickr = tmp_path / 'DIV2K_train_HR', tmp_path / 'Flickr2K_HR'
    div2k.mkdir()
    flickr.mkdir()
    hrs = {'0001': _smooth_image(rng, 77, 101), '000002': _smooth_image(rng, 60, 50)}
    cv2.imwrite(str(div2k / '0001.png'), hrs['0001'])
    cv2.imwrite(str(flickr / '000002.png'), hrs['000002'])
    out = tmp_path / 'DF2K'
    args = ['--hr', str(div2k), str(flickr), '--out', str(out), '--scales', '2', '3', '4', '--crop', '48',
            '--step', '24']
    assert df2k.main(args) == 0

    # 0001: mod-12 crop 72x96 -> starts rows [0, 24], cols [0, 24, 48] = 6; 000002: 60x48 -> rows [0, 12], cols [0]
    subs = sorted(p.name for p in (out / 'HR_sub').iterdir() if not p.name.startswith('.'))
    assert len(subs) == 8 and subs[:2] == ['000002_s001.png', '000002_s002.png']
    hr = hrs['0001'][:72, :96]
    for s in (2, 3, 4):
        lr_full = _matlab_resize(hr, s)  # LR made from the whole (mod-cropped) image, then cut at HR offsets / s
        got = cv2.imread(str(out / f'LR_bicubic_X{s}_sub' / '0001_s006.png'))
        assert got.shape == (48 // s, 48 // s, 3)
        np.testing.assert_array_equal(got, lr_full[24 // s:24 // s + 48 // s, 48 // s:48 // s + 48 // s])
    np.testing.assert_array_equal(cv2.imread(str(out / 'HR_sub' / '0001_s006.png')), hr[24:72, 48:96])

    # LMDB through BasicSR's own paired dataset: pairs by key, LR patch = HR patch / s
    from basicsr.data.paired_image_dataset import PairedImageDataset
    ds = PairedImageDataset(dict(dataroot_gt=str(out / 'HR_sub.lmdb'), dataroot_lq=str(out / 'LR_bicubic_X3_sub.lmdb'),
                                 io_backend={'type': 'lmdb'}, phase='train', scale=3, gt_size=24, use_hflip=False,
                                 use_rot=False, filename_tmpl='{}'))
    assert len(ds) == 8
    item = ds[0]
    assert item['gt'].shape == (3, 24, 24) and item['lq'].shape == (3, 8, 8)
    meta = (out / 'HR_sub.lmdb' / 'meta_info.txt').read_text().splitlines()
    assert meta[0] == '0001_s001.png (48,48,3) 1' and len(meta) == 8  # keys = stems, natural order

    # resume: nothing is redone, the LMDBs are kept
    mtime = (out / 'HR_sub' / '0001_s001.png').stat().st_mtime_ns
    assert df2k.prepare([div2k, flickr], out, [2, 3, 4], crop=48, step=24) == {'images': 0, 'subimages': 0}
    assert (out / 'HR_sub' / '0001_s001.png').stat().st_mtime_ns == mtime


def test_df2k_readable_errors(tmp_path, capsys):
    df2k = _load('prepare_df2k')
    assert df2k.main(['--hr', str(tmp_path / 'missing'), '--out', str(tmp_path / 'o')]) == 2
    assert 'HR training images' in capsys.readouterr().err
    with pytest.raises(ValueError, match='divisible'):
        df2k.prepare([tmp_path], tmp_path / 'o', [3], crop=50, step=24)
    a, b = tmp_path / 'a', tmp_path / 'b'
    for d in (a, b):
        d.mkdir()
        cv2.imwrite(str(d / 'x.png'), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match='unique'):
        df2k.prepare([a, b], tmp_path / 'o', [2], crop=4, step=2)


# ----------------------------------------------------------------------------------------------- benchmarks
def test_sr_benchmarks_layout_and_pairs(tmp_path, monkeypatch):
    monkeypatch.setenv('FKE_PREP_QUIET', '1')
    bench = _load('prepare_sr_benchmarks')
    rng = np.random.default_rng(1)
    raw = tmp_path / 'raw'
    (raw / 'Set5' / 'GTmod12').mkdir(parents=True)
    cv2.imwrite(str(raw / 'Set5' / 'GTmod12' / 'baby.png'), _smooth_image(rng, 37, 29))
    cv2.imwrite(str(raw / 'Set5' / 'GTmod12' / 'bird.png'), _smooth_image(rng, 24, 30, channels=1))  # grayscale
    (raw / 'Urban100').mkdir(parents=True)
    cv2.imwrite(str(raw / 'Urban100' / 'img_001_SRF_2_HR.png'), _smooth_image(rng, 40, 36))
    cv2.imwrite(str(raw / 'Urban100' / 'img_001_SRF_2_LR.png'), _smooth_image(rng, 20, 18))  # skipped
    out = tmp_path / 'SR'
    assert bench.main(['--src', str(raw), '--out', str(out), '--sets', 'Set5', 'Urban100', '--scales', '2', '3']) == 0

    assert sorted(p.name for p in (out / 'Urban100' / 'HR').iterdir()) == ['img_001.png']
    baby = cv2.imread(str(raw / 'Set5' / 'GTmod12' / 'baby.png'))
    np.testing.assert_array_equal(cv2.imread(str(out / 'Set5' / 'HR' / 'baby.png')), baby)
    for s in (2, 3):
        lr = cv2.imread(str(out / 'Set5' / 'LR_bicubic' / f'X{s}' / 'baby.png'))
        assert lr.shape == (37 // s, 29 // s, 3)
        np.testing.assert_array_equal(lr, _matlab_resize(baby[:37 // s * s, :29 // s * s], s))
    assert cv2.imread(str(out / 'Set5' / 'LR_bicubic' / 'X3' / 'bird.png')).shape == (8, 10, 3)

    # BasicSR's test-time dataset crops GT to s·LR: the mod-s protocol
    from basicsr.data.paired_image_dataset import PairedImageDataset
    ds = PairedImageDataset(dict(dataroot_gt=str(out / 'Set5' / 'HR'), dataroot_lq=str(out / 'Set5/LR_bicubic/X3'),
                                 io_backend={'type': 'disk'}, phase='val', scale=3, filename_tmpl='{}'))
    shapes = sorted((tuple(d['gt'].shape), tuple(d['lq'].shape)) for d in (ds[0], ds[1]))
    assert shapes == [((3, 24, 30), (3, 8, 10)), ((3, 36, 27), (3, 12, 9))]

    mtime = (out / 'Set5' / 'HR' / 'baby.png').stat().st_mtime_ns
    assert bench.prepare_set(raw, out, 'Set5', [2, 3]) == 0  # resumable: nothing rewritten
    assert (out / 'Set5' / 'HR' / 'baby.png').stat().st_mtime_ns == mtime
    assert bench.main(['--src', str(raw), '--out', str(out), '--sets', 'Set14']) == 2  # readable, no traceback


# ----------------------------------------------------------------------------------------------- metrics
def _y(img_bgr: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma on the 0-255 scale from uint8 BGR (BasicSR's bgr2ycbcr(y_only=True) protocol)."""
    b, g, r = (img_bgr[..., i].astype(np.float64) / 255.0 for i in range(3))
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def _ref_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(255.0 ** 2 / np.mean((a - b) ** 2))


def _ref_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. SSIM: 11x11 Gaussian (sigma 1.5), 'valid' windows, C1=(0.01*255)^2, C2=(0.03*255)^2."""
    from scipy.signal import convolve2d
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    win = np.outer(g, g) / np.outer(g, g).sum()

    def f(x):
        return convolve2d(x, win, mode='valid')

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    return float(np.mean(num / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))))


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_y_channel_psnr_ssim_of_test_options_match_reference(scale):
    from basicsr.metrics import calculate_metric
    from fke_basicsr.options import load_yaml

    rng = np.random.default_rng(scale)
    gt = _smooth_image(rng, 48, 40)
    out = np.clip(gt.astype(np.int16) + rng.integers(-6, 7, gt.shape), 0, 255).astype(np.uint8)
    opt = load_yaml(REPO / 'options/test/SR' / f'test_ATD_light_FKE_SRx{scale}.yml')
    got = {name: calculate_metric(dict(img=out, img2=gt), dict(m)) for name, m in opt['val']['metrics'].items()}
    c = scale
    ya, yb = _y(out)[c:-c, c:-c], _y(gt)[c:-c, c:-c]
    assert got['psnr'] == pytest.approx(_ref_psnr(ya, yb), abs=1e-6)  # BasicSR's Y is float32
    assert got['ssim'] == pytest.approx(_ref_ssim(ya, yb), abs=1e-6)
