"""FreqLoss against a numpy hand computation (paper §4.1)."""
import numpy as np
import pytest
import torch

import fke_basicsr  # noqa: F401  (registration)
from basicsr.losses import build_loss
from basicsr.utils.registry import LOSS_REGISTRY

from fke_basicsr.losses.freq_loss import FreqLoss


def _numpy_freq(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-entry |F(pred) − F(gt)| with numpy's one-sided unnormalised FFT over the last two axes."""
    diff = np.fft.rfft2(pred.astype(np.float64), axes=(-2, -1)) - np.fft.rfft2(gt.astype(np.float64), axes=(-2, -1))
    return np.sqrt(diff.real ** 2 + diff.imag ** 2)


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 3, 10, 13, generator=g)  # odd width: one-sided spectrum has 13 // 2 + 1 = 7 columns
    gt = torch.rand(2, 3, 10, 13, generator=g)
    return pred, gt


def test_registered_and_built_from_options():
    assert LOSS_REGISTRY.get('FreqLoss') is FreqLoss
    loss = build_loss({'type': 'FreqLoss', 'loss_weight': 0.01, 'reduction': 'mean'})
    assert isinstance(loss, FreqLoss) and loss.loss_weight == 0.01


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_equals_numpy(pair, reduction):
    pred, gt = pair
    ref = _numpy_freq(pred.numpy(), gt.numpy())
    assert ref.shape == (2, 3, 10, 7)
    out = FreqLoss(loss_weight=0.5, reduction=reduction)(pred, gt)
    expected = 0.5 * {'mean': ref.mean(), 'sum': ref.sum(), 'none': ref}[reduction]
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_not_amplitude_only_nor_split_l1(pair):
    """The modulus of the complex difference, not |amp| differences or L1 over Re and Im separately."""
    pred, gt = pair
    out = FreqLoss()(pred, gt).item()
    fp, fg = np.fft.rfft2(pred.numpy().astype(np.float64)), np.fft.rfft2(gt.numpy().astype(np.float64))
    amp_only = np.abs(np.abs(fp) - np.abs(fg)).mean()
    split_l1 = (np.abs(fp.real - fg.real) + np.abs(fp.imag - fg.imag)).mean()
    assert abs(out - amp_only) > 1e-3 and abs(out - split_l1) > 1e-3


def test_list_is_mean_over_list(pair):
    pred, gt = pair
    preds = [pred, pred * 0.5, gt + 0.1]
    ref = np.mean([_numpy_freq(p.numpy(), gt.numpy()).mean() for p in preds])
    out = FreqLoss(loss_weight=0.01)(preds, gt)
    np.testing.assert_allclose(out.item(), 0.01 * ref, rtol=1e-5)
    assert torch.allclose(FreqLoss()(tuple(preds), gt), FreqLoss()(preds, gt))


def test_fp32_for_low_precision_inputs(pair):
    pred, gt = pair
    for dtype in (torch.bfloat16, torch.float16):
        p, t = pred.to(dtype), gt.to(dtype)
        out = FreqLoss()(p, t)
        assert out.dtype == torch.float32
        ref = _numpy_freq(p.float().numpy(), t.float().numpy()).mean()
        np.testing.assert_allclose(out.item(), ref, rtol=1e-5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = FreqLoss()(pred, gt)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.item(), _numpy_freq(pred.numpy(), gt.numpy()).mean(), rtol=1e-5)


def test_gradient_matches_autograd_of_reference(pair):
    pred, gt = pair
    p1 = pred.clone().double().requires_grad_()
    FreqLoss()(p1, gt.double()).backward()
    p2 = pred.clone().double().requires_grad_()
    (torch.fft.rfft2(p2) - torch.fft.rfft2(gt.double())).abs().mean().backward()
    assert torch.allclose(p1.grad, p2.grad, atol=1e-12)


def test_bad_arguments(pair):
    pred, gt = pair
    with pytest.raises(ValueError, match='reduction'):
        FreqLoss(reduction='avg')
    with pytest.raises(ValueError, match='same shape'):
        FreqLoss()(pred, gt[..., :12])
    with pytest.raises(ValueError, match='weight'):
        FreqLoss()(pred, gt, weight=torch.ones_like(gt))
    with pytest.raises(ValueError, match='empty'):
        FreqLoss()([], gt)
