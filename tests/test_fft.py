"""ops.fft: fp32 FFTs for any input dtype / autocast state (docs/architecture.md, Fourier Kernel Estimator)."""
import numpy as np
import pytest
import torch

from fke_basicsr.ops.fft import irfft2, rfft2

torch.set_num_threads(2)


def test_matches_numpy_and_dtypes():
    x = torch.randn(2, 3, 8, 10, dtype=torch.float64)
    X = rfft2(x)
    assert X.dtype == torch.complex128
    np.testing.assert_allclose(X.numpy(), np.fft.rfft2(x.numpy()), rtol=1e-12, atol=1e-12)
    X32 = rfft2(x.float())
    assert X32.dtype == torch.complex64
    np.testing.assert_allclose(X32.numpy(), np.fft.rfft2(x.float().numpy()), rtol=1e-4, atol=1e-4)
    assert irfft2(X32).dtype == torch.float32
    assert irfft2(X).dtype == torch.float64
    assert irfft2(X32, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_inputs_on_cpu(dtype):
    x = torch.randn(1, 4, 12, 14).to(dtype)
    with pytest.raises(RuntimeError):  # what the op protects against: CPU torch rejects half FFTs
        torch.fft.rfft2(x)
    X = rfft2(x)
    assert X.dtype == torch.complex64
    torch.testing.assert_close(X, torch.fft.rfft2(x.float()))
    y = irfft2(X, dtype=dtype)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), x.float(), rtol=0, atol=1e-2)


def test_autocast_cpu_computes_in_fp32():
    lin = torch.nn.Linear(16, 16)
    x = torch.randn(2, 3, 6, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        h = lin(x)
        assert h.dtype == torch.bfloat16
        X = rfft2(h)
        y = irfft2(X, s=h.shape[-2:], dtype=h.dtype)
        X64 = rfft2(h.double())  # fp64 is never downcast either
    assert X.dtype == torch.complex64 and X64.dtype == torch.complex128
    torch.testing.assert_close(X, torch.fft.rfft2(h.float()))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), h.float(), rtol=0, atol=2e-2)


def test_odd_sizes_round_trip():
    x = torch.randn(1, 2, 250, 187)
    X = rfft2(x)
    assert X.shape == (1, 2, 250, 94)
    torch.testing.assert_close(irfft2(X, s=(250, 187)), x, rtol=0, atol=1e-5)
    # without a size torch's default width 2·(W_f − 1) is used (what DeepRFTv2's FKE relies on for even W)
    assert irfft2(X).shape == (1, 2, 250, 186)
    for norm in ('ortho', 'forward'):
        torch.testing.assert_close(irfft2(rfft2(x, norm=norm), s=(250, 187), norm=norm), x, rtol=0, atol=1e-5)
        np.testing.assert_allclose(rfft2(x, norm=norm).numpy(), np.fft.rfft2(x.numpy(), norm=norm),
                                   rtol=1e-3, atol=1e-3)


def test_gradients_flow():
    x = torch.randn(1, 2, 9, 11, requires_grad=True)
    k = torch.randn(1, 2, 9, 6, dtype=torch.complex64, requires_grad=True)
    irfft2(rfft2(x) * k, s=(9, 11)).square().sum().backward()
    x2, k2 = x.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    torch.fft.irfft2(torch.fft.rfft2(x2) * k2, s=(9, 11)).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(k.grad, k2.grad)
    xb = torch.randn(1, 1, 8, 8).bfloat16().requires_grad_()
    irfft2(rfft2(xb), dtype=torch.bfloat16).float().sum().backward()
    assert xb.grad is not None and xb.grad.dtype == torch.bfloat16 and torch.isfinite(xb.grad.float()).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match='x must be a real'):
        rfft2(torch.randn(4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match='x must be a real'):
        rfft2(torch.ones(4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match='X must be a complex'):
        irfft2(torch.randn(4, 4))
    with pytest.raises(ValueError, match='norm'):
        rfft2(torch.randn(4, 4), norm='nope')
    with pytest.raises(ValueError, match='s must be'):
        irfft2(torch.randn(4, 3, dtype=torch.complex64), s=(4,))
