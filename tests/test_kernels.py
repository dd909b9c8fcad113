"""fke_basicsr.kernels and scripts/visualize_kernels.py: Fig. 2 / 6 / 8 tensors against numpy references."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import fke_basicsr  # noqa: F401
from fke_basicsr import kernels
from fke_basicsr.archs.fke import FourierKernelEstimator
from fke_basicsr.ops.fft import irfft2, rfft2

REPO = Path(__file__).resolve().parents[1]
TINY_SETS = ['--set', 'width=8', '--set', 'enc_blocks=[1,1,1]', '--set', 'dec_blocks=[1,1,1]', '--set', 'fke_width=8']


def test_blur_pattern_matches_numpy():
    rgb = np.random.default_rng(0).random((3, 20, 26))
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    spec = np.fft.rfft2(luma)
    relu = np.maximum(spec.real, 0) + 1j * np.maximum(spec.imag, 0)
    ref = np.roll(np.fft.irfft2(relu, s=luma.shape) - luma / 2, (10, 13), axis=(0, 1))
    got = kernels.blur_pattern_map(torch.from_numpy(rgb).float())
    assert got.shape == (1, 1, 20, 26)
    np.testing.assert_allclose(got[0, 0].numpy(), ref, atol=1e-5)
    # ReLU(a) = (a + |a|)/2: the map is σ(F⁻¹(|Re F| + i|Im F|))/2
    alt = np.roll(np.fft.irfft2(np.abs(spec.real) + 1j * np.abs(spec.imag), s=luma.shape) / 2, (10, 13), (0, 1))
    np.testing.assert_allclose(got[0, 0].numpy(), alt, atol=1e-5)
    per_channel = kernels.blur_pattern_map(torch.from_numpy(rgb).float(), mode='rgb')
    assert per_channel.shape == (1, 3, 20, 26)


def test_gt_kernel_recovers_a_circular_blur():
    rng = np.random.default_rng(1)
    sharp = rng.random((32, 40))
    k = np.zeros((5, 5))
    k[2, :] = [0.1, 0.2, 0.4, 0.2, 0.1]
    k[1, 3] = 0.3
    k /= k.sum()
    origin = np.zeros_like(sharp)                   # kernel centre at the origin: circular convolution
    for dy in range(5):
        for dx in range(5):
            origin[(dy - 2) % 32, (dx - 2) % 40] = k[dy, dx]
    blur = np.fft.irfft2(np.fft.rfft2(sharp) * np.fft.rfft2(origin), s=sharp.shape)
    est = kernels.gt_kernel(torch.from_numpy(blur)[None], torch.from_numpy(sharp)[None], eps=1e-9, mode='rgb')
    assert est.spatial.shape == (1, 1, 32, 40)
    crop = est.spatial[0, 0, 16 - 2:16 + 3, 20 - 2:20 + 3].numpy()
    np.testing.assert_allclose(crop, k, atol=1e-6)
    assert kernels.kernel_correlation(est.spatial[0, 0], k) == pytest.approx(1.0, abs=1e-9)
    assert kernels.kernel_correlation(-est.spatial[0, 0], k) == pytest.approx(-1.0, abs=1e-9)


def test_linear_cka_against_gram_formula():
    rng = np.random.default_rng(2)
    x, y = rng.random((50, 6)), rng.random((50, 3))

    def ref(a, b):  # HSIC form with the centring matrix H and Gram matrices
        h = np.eye(len(a)) - 1 / len(a)
        ka, kb = h @ a @ a.T @ h, h @ b @ b.T @ h
        return np.trace(ka @ kb) / np.sqrt(np.trace(ka @ ka) * np.trace(kb @ kb))

    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert kernels.linear_cka(tx, ty) == pytest.approx(ref(x, y), rel=1e-9)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert kernels.linear_cka(tx, torch.from_numpy(3 * x @ q + 1)) == pytest.approx(1.0, rel=1e-9)
    with pytest.raises(ValueError, match='same n'):
        kernels.linear_cka(tx, ty[:10])


def test_capture_fke_records_the_kernel_that_is_applied():
    torch.manual_seed(0)
    fke = FourierKernelEstimator(in_channels=8, width=8, image_head=True).eval()
    feat, blur = torch.randn(1, 8, 16, 20), torch.rand(1, 3, 16, 20)
    with torch.no_grad(), kernels.capture_fke(fke) as cap:
        out = fke(feat, blur=blur)
    (c,) = cap.captures
    assert c.kernel_spectrum.shape == (1, 8, 16, 11) and c.kernel_spectrum.is_complex()
    assert len(c.spectral_features) == 5 and all(f.shape == (1, 8, 16, 11) for f in c.spectral_features)
    torch.testing.assert_close(c.input_feature, feat)
    torch.testing.assert_close(c.output_feature, out.feature)
    with torch.no_grad():   # the FKE's output re-computed from the captured K: irfft2(F(proj_feature(d)) ⊙ K)
        filtered = irfft2(rfft2(fke.proj_feature(feat)) * c.kernel_spectrum)
        torch.testing.assert_close(fke.fuse(torch.cat([filtered, feat], 1)), out.feature, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c.kernel_spatial, torch.roll(irfft2(c.kernel_spectrum), (8, 10), (-2, -1)))
    # full, centred spectrum magnitude equals numpy's fftshift(|fft2|) of the spatial kernel
    full = kernels.full_spectrum_magnitude(c.kernel_effective_spectrum[0, :1], 20)[0]
    ref = np.fft.fftshift(np.abs(np.fft.fft2(irfft2(c.kernel_spectrum)[0, 0].double().numpy())))
    np.testing.assert_allclose(full.numpy(), ref, rtol=1e-4, atol=1e-4)


def _load_script():
    spec = importlib.util.spec_from_file_location('visualize_kernels', REPO / 'scripts' / 'visualize_kernels.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_visualize_kernels_writes_pngs_and_demo_correlation(tmp_path, capsys):
    rng = np.random.default_rng(3)
    demo = tmp_path / 'demo'
    for sub in ('blur', 'sharp', 'kernels'):
        (demo / sub).mkdir(parents=True)
    for i in range(2):
        sharp = cv2.resize(rng.random((8, 8, 3)).astype(np.float32), (32, 32), interpolation=cv2.INTER_CUBIC)
        k = np.zeros((5, 5), np.float32)
        k[2] = 0.2
        blur = cv2.filter2D(sharp, -1, k[::-1, ::-1].copy(), borderType=cv2.BORDER_REFLECT)
        cv2.imwrite(str(demo / 'sharp' / f'{i:04d}.png'), (sharp.clip(0, 1) * 255).round().astype(np.uint8))
        cv2.imwrite(str(demo / 'blur' / f'{i:04d}.png'), (blur.clip(0, 1) * 255).round().astype(np.uint8))
        np.save(demo / 'kernels' / f'{i:04d}.npy', k)
    out = tmp_path / 'figs'
    code = _load_script().main(['--blur', str(demo / 'blur' / '0000.png'), '--sharp', str(demo / 'sharp' / '0000.png'),
                                '--arch', 'DeepRFTv2', '--variant', 'S', *TINY_SETS, '-o', str(out),
                                '--demo-root', str(demo), '--threads', '1'])
    assert code == 0
    names = {p.name for p in out.glob('*.png')}
    assert {'fig2_blur_pattern.png', 'fig6_gt_kernel.png', 'fig8_cka.png'} <= names
    assert {f'fig6_fke_{s}_{i}.png' for s in ('max', 'mid') for i in (0, 1)} <= names
    assert all(cv2.imread(str(out / n)) is not None for n in names)
    report = json.loads((out / 'kernels.json').read_text())
    assert set(report['cka']) == {'fke_max.0', 'fke_max.1', 'fke_mid.0', 'fke_mid.1'}
    assert all(0 <= v <= 1 for feats in report['cka'].values() for v in feats.values())
    corr = json.loads((out / 'demo_kernel_correlation.json').read_text())
    assert corr['images'] == 2 and {'gt_division', 'delta_baseline', 'fke_max.1'} <= set(corr['mean'])
    assert corr['mean']['gt_division'] > 0.5   # the 5-px box blur is recoverable from the pair
    assert 'kernel correlation over 2 demo images' in capsys.readouterr().out
