"""fke_basicsr.infer: exact tiling through the inference path, tiled vs whole DeepRFTv2, the folder CLI."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import fke_basicsr  # noqa: F401
from fke_basicsr import infer
from fke_basicsr.build import build_model
from fke_basicsr.archs.outputs import prediction
from fke_basicsr.ops.geometry import TileGrid
from fke_basicsr.ops.pyramid import gaussian_pyramid

TINY = {'type': 'DeepRFTv2', 'variant': 'S', 'width': 8, 'enc_blocks': [1, 1, 1], 'dec_blocks': [1, 1, 1],
        'fke_width': 8}
TINY_SETS = [a for k, v in TINY.items() if k not in ('type', 'variant') for a in ('--set', f'{k}={json.dumps(v)}')]


@pytest.mark.parametrize('tile,overlap', [(64, 16), (128, 32), (96, 0), (100, 30), (512, 128), (0, 0), (8, 0)])
def test_identity_reconstructs_exactly(tile, overlap):
    """Pad (reflect, to 8) → tiles → blend → crop is the identity for an identity model: exact in float64 (weights
    are a partition of unity), to float32 rounding in float32. (100, 30) is rounded to (96, 24)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 203, 317, generator=g, dtype=torch.float64)
    r = infer.Restorer(nn.Identity(), tile=tile, overlap=overlap, multiple=8, log=lambda s: None)
    assert r.tile is None or (r.tile % 8 == 0 and r.overlap % 8 == 0 and r.overlap < r.tile)
    y = r(x)
    assert y.shape == x.shape and y.dtype == torch.float64
    torch.testing.assert_close(y, x, rtol=0, atol=1e-12)
    y32 = r(x.float())
    torch.testing.assert_close(y32, x.float(), rtol=0, atol=3e-7)


def test_scale_and_pointwise_model():
    """A ×2 nearest up-sampler is pixel-local: tiled output equals the whole-image output exactly."""
    up = nn.Upsample(scale_factor=2, mode='nearest')
    x = torch.rand(1, 3, 45, 61, dtype=torch.float64)
    y = infer.Restorer(up, tile=16, overlap=8, scale=2, multiple=8, log=lambda s: None)(x)
    torch.testing.assert_close(y, up(x), rtol=0, atol=1e-12)


def test_tiled_vs_whole_deeprftv2():
    """DeepRFTv2 is global (FKE spectra, SCA pooling, scans), so each tile's output differs from the whole-image
    output; the blend is a convex combination of the tiles covering a pixel (non-negative weights summing to 1),
    so the documented tolerance is: at every pixel the tiled result lies between the smallest and the largest
    output of those tiles, hence |tiled − whole| ≤ max over covering tiles |tile output − whole|. The tiles are
    cut from the whole-image pyramid, as in evaluation. One tile covering the image reproduces the whole-image
    output exactly."""
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    x = torch.rand(1, 3, 40, 72)
    with torch.no_grad():
        whole = prediction(model(x))
    single = infer.Restorer(model, tile=128, overlap=32, log=lambda s: None)(x)
    torch.testing.assert_close(single, whole, rtol=0, atol=0)

    tiled = infer.Restorer(model, tile=32, overlap=16, log=lambda s: None)(x)
    grid = TileGrid((40, 72), 32, 16)
    lo = torch.full_like(whole, float('inf'))
    hi = torch.full_like(whole, -float('inf'))
    with torch.no_grad():
        for r, c, h, w in grid.boxes():
            b1, b2 = gaussian_pyramid(x, 2)
            out = model.forward_pyramid([b1[..., r:r + h, c:c + w],
                                         b2[..., r // 2:(r + h) // 2, c // 2:(c + w) // 2]]).full[-1]
            lo[..., r:r + h, c:c + w] = torch.minimum(lo[..., r:r + h, c:c + w], out)
            hi[..., r:r + h, c:c + w] = torch.maximum(hi[..., r:r + h, c:c + w], out)
    assert bool(((tiled >= lo - 1e-5) & (tiled <= hi + 1e-5)).all())
    bound = torch.maximum((hi - whole).abs(), (lo - whole).abs())
    assert bool(((tiled - whole).abs() <= bound + 1e-5).all())
    assert len(grid) > 1 and not torch.equal(tiled, whole)


def _write_inputs(folder: Path) -> None:
    rng = np.random.default_rng(0)
    img16 = (rng.random((24, 40, 3)) * 65535).astype(np.uint16)
    cv2.imwrite(str(folder / 'a16.png'), img16)
    img8 = (rng.random((20, 28, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(folder / 'b.jpg'), img8)
    (folder / 'c_corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n this is not an image')
    (folder / 'notes.txt').write_text('skipped: not an image extension')


def test_cli_folder_bit_depth_and_corrupt_file(tmp_path, capsys):
    src, dst = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    _write_inputs(src)
    code = infer.main(['-i', str(src), '-o', str(dst), '--arch', 'DeepRFTv2', '--variant', 'S', *TINY_SETS,
                       '--tile', '16', '--tile-overlap', '8', '--device', 'cpu', '--quiet', '--threads', '1'])
    cap = capsys.readouterr()
    assert code != 0
    assert sorted(p.name for p in dst.iterdir()) == ['a16.png', 'b.jpg']
    a = cv2.imread(str(dst / 'a16.png'), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(dst / 'b.jpg'), cv2.IMREAD_UNCHANGED)
    assert a.dtype == np.uint16 and a.shape == (24, 40, 3)
    assert b.dtype == np.uint8 and b.shape == (20, 28, 3)
    errors = [ln for ln in cap.err.splitlines() if ln.startswith('error:')]
    assert len(errors) == 1 and 'c_corrupt.png' in errors[0]
    assert 's/image' in cap.out and '2 written, 1 failed' in cap.out


def test_gray_and_alpha_round_trip():
    """Gray images are replicated to RGB and averaged back; alpha is carried through untouched."""
    r = infer.Restorer(nn.Identity(), tile=0, multiple=8, log=lambda s: None)
    gray = (np.arange(12 * 10).reshape(12, 10) * 2).astype(np.uint8)
    np.testing.assert_array_equal(r.restore_image(gray), gray)
    bgra = np.random.default_rng(1).integers(0, 65535, (9, 7, 4)).astype(np.uint16)
    np.testing.assert_array_equal(r.restore_image(bgra), bgra)


def test_weights_opt_sha_and_mismatch(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model(TINY)
    ckpt = tmp_path / 'net_g.pth'
    torch.save({'params': model.state_dict()}, ckpt)
    img = (np.random.default_rng(2).random((16, 24, 3)) * 255).astype(np.uint8)
    (tmp_path / 'in').mkdir()
    cv2.imwrite(str(tmp_path / 'in' / 'x.png'), img)
    opt = tmp_path / 'test.yml'
    net = ''.join(f'  {k}: {json.dumps(v)}\n' for k, v in TINY.items())
    opt.write_text(f'name: t\nnetwork_g:\n{net}path:\n  pretrain_network_g: {ckpt}\n  param_key_g: params\n')
    code = infer.main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--opt', str(opt), '--tile', '0',
                       '--quiet', '--device', 'cpu'])
    cap = capsys.readouterr()
    assert code == 0
    assert f'sha256 {infer.sha256sum(ckpt)}' in cap.out
    # same result as running the loaded network directly
    expected = infer.Restorer(model, tile=None, log=lambda s: None).restore_image(img)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'out' / 'x.png')), expected)

    code = infer.main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out2'), '--arch', 'DeepRFTv2',
                       '--variant', 'S', '--weights', str(ckpt), '--quiet', '--device', 'cpu'])
    err = capsys.readouterr().err
    assert code == 2 and 'does not match DeepRFTv2' in err and 'shape mismatches' in err
    code = infer.main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out3'), '--opt', str(opt),
                       '--sha256', '0' * 64, '--quiet', '--device', 'cpu'])
    assert code == 2 and 'sha256' in capsys.readouterr().err


def test_bad_arguments():
    with pytest.raises(ValueError, match='amp'):
        infer.Restorer(nn.Identity(), amp='fp8')
    with pytest.raises(ValueError, match='tile'):
        infer.Restorer(nn.Identity(), tile=-1)
    with pytest.raises(ValueError, match='neither a file nor a folder'):
        infer.list_images('/nonexistent/path')
