"""ops.pyramid against a direct numpy computation of kornia's pyrdown (docs/architecture.md, Input pyramid)."""
import numpy as np
import pytest
import torch

from fke_basicsr.ops.pyramid import gaussian_pyramid, pyr_down

torch.set_num_threads(2)


def np_blur(x):
    """5×5 binomial blur with reflect borders, as an explicit weighted sum of shifted copies."""
    k1 = np.array([1., 4., 6., 4., 1.])
    k = np.outer(k1, k1) / 256.
    h, w = x.shape[-2:]
    xp = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(2, 2), (2, 2)], mode='reflect')
    out = np.zeros_like(x)
    for a in range(5):
        for b in range(5):
            out += k[a, b] * xp[..., a:a + h, b:b + w]
    return out


def np_bilinear(x, oh, ow):
    """Bilinear resize, align_corners=False, source index clamped at 0 (PyTorch/kornia convention)."""
    h, w = x.shape[-2:]

    def axis(n_in, n_out):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.maximum(src, 0.)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, lr = axis(h, oh)
    c0, c1, lc = axis(w, ow)
    top = x[..., r0, :] * (1 - lr)[:, None] + x[..., r1, :] * lr[:, None]
    return top[..., c0] * (1 - lc) + top[..., c1] * lc


@pytest.mark.parametrize('shape', [(2, 3, 16, 20), (1, 2, 17, 23), (1, 1, 250, 187), (1, 3, 5, 3)])
def test_pyr_down_matches_numpy(shape):
    x = torch.rand(*shape, dtype=torch.float64)
    ref = np_bilinear(np_blur(x.numpy()), shape[2] // 2, shape[3] // 2)
    out = pyr_down(x)
    assert out.shape == (*shape[:2], shape[2] // 2, shape[3] // 2)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pyr_down(x.float()).numpy(), ref, rtol=1e-5, atol=1e-6)


def test_even_size_is_2x2_average_of_blur():
    x = torch.rand(1, 3, 12, 8, dtype=torch.float64)
    b = np_blur(x.numpy())
    avg = 0.25 * (b[..., 0::2, 0::2] + b[..., 1::2, 0::2] + b[..., 0::2, 1::2] + b[..., 1::2, 1::2])
    np.testing.assert_allclose(pyr_down(x).numpy(), avg, rtol=1e-12, atol=1e-12)


def test_constant_image_is_preserved_and_gradients_flow():
    x = torch.full((1, 1, 9, 7), 0.25, requires_grad=True)
    y = pyr_down(x)
    torch.testing.assert_close(y, torch.full((1, 1, 4, 3), 0.25))
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_gaussian_pyramid_levels():
    x = torch.rand(2, 3, 32, 24)
    pyr = gaussian_pyramid(x, 3)
    assert [p.shape[-2:] for p in pyr] == [(32, 24), (16, 12), (8, 6)]
    assert pyr[0] is x
    torch.testing.assert_close(pyr[2], pyr_down(pyr_down(x)))
    assert len(gaussian_pyramid(x, 1)) == 1


def test_bad_inputs():
    with pytest.raises(ValueError, match='levels'):
        gaussian_pyramid(torch.rand(1, 1, 8, 8), 0)
    with pytest.raises(ValueError, match='at least 3'):
        pyr_down(torch.rand(1, 1, 2, 8))
    with pytest.raises(ValueError, match='B, C, H, W'):
        pyr_down(torch.rand(8, 8))
