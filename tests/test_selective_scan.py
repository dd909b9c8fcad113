"""Selective scan: the chunked 'torch' backend against the sequential oracle (docs/scan_backends.md)."""
import math

import pytest
import torch

import fke_basicsr.ops.selective_scan as ss
from fke_basicsr.ops.selective_scan import (SCAN_BACKEND_ENV, resolve_backend, selective_scan, selective_scan_ref,
                                            selective_scan_torch)

GRAD_NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')


def make_inputs(b, d, n, length, groups=None, dtype=torch.float64, seed=0, delta_scale=0.5):
    """Random scan inputs; groups=None gives the 3-D (b, n, L) B/C form, otherwise (b, groups, n, L)."""
    g = torch.Generator().manual_seed(seed)
    bc_shape = (b, n, length) if groups is None else (b, groups, n, length)
    return {
        'u': torch.randn(b, d, length, generator=g, dtype=dtype),
        'delta': torch.randn(b, d, length, generator=g, dtype=dtype) * delta_scale,
        'A': -torch.rand(d, n, generator=g, dtype=dtype) * 4 - 0.1,
        'B': torch.randn(*bc_shape, generator=g, dtype=dtype),
        'C': torch.randn(*bc_shape, generator=g, dtype=dtype),
        'D': torch.randn(d, generator=g, dtype=dtype),
        'z': torch.randn(b, d, length, generator=g, dtype=dtype),
        'delta_bias': torch.randn(d, generator=g, dtype=dtype) * 0.3,
    }


def run_with_grads(fn, inputs, seed=1, last_weight=1.0, **kwargs):
    """Output, last state and the gradients of a random linear functional of both, for every tensor input."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    y, last = fn(**leaves, return_last_state=True, **kwargs)
    g = torch.Generator().manual_seed(seed)
    wy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y)
    wl = torch.randn(last.shape, generator=g, dtype=torch.float64).to(last)
    loss = (y * wy).sum() + last_weight * (last * wl).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return y.detach(), last.detach(), dict(zip(leaves, grads))


def assert_close_rel(actual, expected, rel, what):
    """max|actual - expected| <= rel * max|expected| (the brief's criterion), computed in float64."""
    actual, expected = actual.double(), expected.double()
    assert torch.isfinite(actual).all(), f'{what}: non-finite values'
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rel * max(scale, 1e-12), f'{what}: max|diff| {err:.3g} > {rel:g} * {scale:.3g}'


CASES = [  # (b, d, n, L, groups, chunk_size)
    (2, 4, 3, 37, None, 5),     # L not a multiple of the chunk
    (1, 6, 2, 1, 2, None),      # L = 1
    (2, 4, 3, 50, 2, 7),        # two groups
    (1, 3, 2, 64, 1, 8),        # 4-D with G=1, exact multiple
    (1, 3, 2, 64, None, 64),    # one chunk
    (2, 3, 4, 23, None, 1),     # chunks of one step
    (1, 8, 8, 70, 1, None),     # default chunk
]


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('options', [
    dict(use_D=True, use_z=True, use_bias=True, delta_softplus=True),
    dict(use_D=False, use_z=False, use_bias=False, delta_softplus=False),
    dict(use_D=True, use_z=False, use_bias=True, delta_softplus=True),
])
def test_torch_matches_ref(case, options):
    b, d, n, length, groups, chunk = case
    inputs = make_inputs(b, d, n, length, groups)
    for key, flag in (('D', 'use_D'), ('z', 'use_z'), ('delta_bias', 'use_bias')):
        if not options[flag]:
            inputs.pop(key)
    softplus = options['delta_softplus']
    # Oracle: the sequential loop in float64.
    y_ref, last_ref, g_ref = run_with_grads(selective_scan_ref, inputs, delta_softplus=softplus)
    # Chunked scan in float64: equal up to float64 rounding.
    y64, last64, g64 = run_with_grads(selective_scan_torch, inputs, delta_softplus=softplus, chunk_size=chunk)
    # Chunked scan in float32: the brief's 1e-5 relative bound, for the output and every gradient.
    inputs32 = {k: v.float() for k, v in inputs.items()}
    y32, last32, g32 = run_with_grads(selective_scan_torch, inputs32, delta_softplus=softplus, chunk_size=chunk)
    assert y32.dtype == torch.float32 and y32.shape == (b, d, length) and last32.shape == (b, d, n)
    for rel, (y, last, grads) in ((1e-12, (y64, last64, g64)), (1e-5, (y32, last32, g32))):
        assert_close_rel(y, y_ref, rel, 'output')
        assert_close_rel(last, last_ref, rel, 'last_state')
        for name in inputs:
            if length == 1 and name == 'A':  # h_{-1} = 0: A has no influence on a single step
                assert grads[name].abs().max() == 0
                continue
            assert_close_rel(grads[name], g_ref[name], rel, f'grad {name}')


def test_ref_matches_closed_form():
    # One channel, one state, constant Δ: h_t = Σ_s e^{ΔA(t-s)} Δ B u_s is a geometric convolution.
    length, dt, a_val = 6, 0.3, -0.7
    u = torch.arange(1.0, length + 1, dtype=torch.float64).view(1, 1, length)
    delta = torch.full_like(u, dt)
    A = torch.tensor([[a_val]], dtype=torch.float64)
    B = torch.full((1, 1, length), 2.0, dtype=torch.float64)
    C = torch.full((1, 1, length), 0.5, dtype=torch.float64)
    expected = [sum(math.exp(dt * a_val * (t - s)) * dt * 2.0 * (s + 1) for s in range(t + 1)) * 0.5
                for t in range(length)]
    y = selective_scan_ref(u, delta, A, B, C)
    torch.testing.assert_close(y.view(-1), torch.tensor(expected, dtype=torch.float64))


def test_grouped_form_equals_repeated_channels():
    # G=2: channels 0..d/2-1 read group 0, the rest group 1 — the same as two separate G=1 scans.
    inputs = make_inputs(1, 4, 3, 20, groups=2, dtype=torch.float32)
    y = selective_scan_torch(inputs['u'], inputs['delta'], inputs['A'], inputs['B'], inputs['C'])
    for gi, chans in enumerate((slice(0, 2), slice(2, 4))):
        part = selective_scan_torch(inputs['u'][:, chans], inputs['delta'][:, chans], inputs['A'][chans],
                                    inputs['B'][:, gi], inputs['C'][:, gi])
        torch.testing.assert_close(y[:, chans], part)


@pytest.mark.parametrize('chunk', [1, 4, 16, None])
def test_large_decays_stay_finite(chunk):
    # Δ·A down to about -400 per step: exp(-cumsum) forms overflow here, products of decays do not.
    inputs = make_inputs(2, 4, 8, 48, groups=None, dtype=torch.float32)
    inputs['delta'] = inputs['delta'].abs() * 20 + 5
    inputs['A'] = -torch.arange(1.0, 9.0).repeat(4, 1) * 2
    assert (inputs['delta'].min() * inputs['A'].abs().min()) >= 10
    assert (inputs['delta'] * 16).max() >= 50
    y_ref, last_ref, g_ref = run_with_grads(selective_scan_ref, {k: v.double() for k, v in inputs.items()},
                                            delta_softplus=True)
    y, last, grads = run_with_grads(selective_scan_torch, inputs, delta_softplus=True, chunk_size=chunk)
    assert_close_rel(y, y_ref, 1e-5, 'output')
    assert_close_rel(last, last_ref, 1e-5, 'last_state')
    for name, grad in grads.items():
        assert_close_rel(grad, g_ref[name], 1e-5, f'grad {name}')


def test_memory_slices_give_the_same_result(monkeypatch):
    # Force the (batch, channel) slicing that bounds memory at long L: results and gradients are unchanged.
    inputs = make_inputs(3, 8, 3, 20, groups=2, dtype=torch.float64)
    y0, last0, g0 = run_with_grads(selective_scan_torch, inputs, delta_softplus=True, chunk_size=6)
    monkeypatch.setattr(ss, 'MAX_SLICE_ELEMENTS', 100)
    assert len(ss._slices(3, 8, 2, 20, 3)) > 6
    y1, last1, g1 = run_with_grads(selective_scan_torch, inputs, delta_softplus=True, chunk_size=6)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(last1, last0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name])


@pytest.mark.parametrize('low', [torch.bfloat16, torch.float16])
def test_low_precision_inputs_compute_in_fp32(low):
    inputs = make_inputs(1, 4, 4, 40, groups=1, dtype=torch.float32)
    low_inputs = {k: (v.to(low) if k in ('u', 'delta', 'B', 'C', 'z') else v) for k, v in inputs.items()}
    y = selective_scan(**low_inputs, delta_softplus=True)
    assert y.dtype == low
    # The same (rounded) values scanned in fp32, rounded once at the end.
    expected = selective_scan_ref(**{k: v.float() for k, v in low_inputs.items()}, delta_softplus=True)
    torch.testing.assert_close(y.float(), expected, rtol=1e-2, atol=1e-2 * expected.abs().max().item())
    # Gradients come back in each input's own dtype.
    u = low_inputs['u'].clone().requires_grad_(True)
    selective_scan(**{**low_inputs, 'u': u}, delta_softplus=True).float().sum().backward()
    assert u.grad.dtype == low and torch.isfinite(u.grad.float()).all()


def test_autocast_does_not_lower_precision():
    inputs = make_inputs(1, 4, 4, 30, dtype=torch.float32)
    plain = selective_scan(**inputs, delta_softplus=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        under = selective_scan(**inputs, delta_softplus=True)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, plain)


# ------------------------------------------------------------------------------------- backend selection
@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(SCAN_BACKEND_ENV, raising=False)
    return monkeypatch


def test_resolution_order(no_env):
    assert resolve_backend('cpu')[0] == 'torch'  # auto on CPU
    assert resolve_backend('cpu', 'ref') == ('ref', 'requested by backend argument')
    no_env.setenv(SCAN_BACKEND_ENV, 'ref')
    name, reason = resolve_backend('cpu')
    assert name == 'ref' and SCAN_BACKEND_ENV in reason
    assert resolve_backend('cpu', 'torch')[0] == 'torch'  # the argument beats the env var
    no_env.setenv(SCAN_BACKEND_ENV, 'AUTO')
    assert resolve_backend('cpu')[0] == 'torch'


def test_auto_uses_mamba_only_on_cuda_when_importable(no_env):
    no_env.setattr(ss, '_mamba_kernel', lambda: (None, 'mamba_ssm not installed'))
    assert resolve_backend('cuda') == ('torch', 'auto: mamba_ssm not installed')
    no_env.setattr(ss, '_mamba_kernel', lambda: (selective_scan_ref, ''))
    assert resolve_backend('cuda')[0] == 'mamba'
    assert resolve_backend('cpu')[0] == 'torch'


def test_explicit_mamba_when_unavailable_raises(no_env):
    no_env.setattr(ss, '_mamba_kernel', lambda: (None, 'mamba_ssm not installed'))
    with pytest.raises(RuntimeError, match='mamba_ssm not installed'):
        resolve_backend('cuda', 'mamba')
    with pytest.raises(RuntimeError, match='needs CUDA'):
        resolve_backend('cpu', 'mamba')
    no_env.setenv(SCAN_BACKEND_ENV, 'mamba')
    with pytest.raises(RuntimeError, match=SCAN_BACKEND_ENV):
        selective_scan(**make_inputs(1, 2, 2, 3, dtype=torch.float32))


def test_invalid_backend_names(no_env):
    with pytest.raises(ValueError, match='must be one of'):
        resolve_backend('cpu', 'cuda')
    no_env.setenv(SCAN_BACKEND_ENV, 'fast')
    with pytest.raises(ValueError, match=SCAN_BACKEND_ENV):
        resolve_backend('cpu')


def test_dispatch_runs_the_selected_backend(no_env):
    inputs = make_inputs(1, 3, 2, 9, dtype=torch.float32)
    ref = selective_scan_ref(**inputs, delta_softplus=True)
    for backend in ('ref', 'torch', None):
        torch.testing.assert_close(selective_scan(**inputs, delta_softplus=True, backend=backend), ref)
    y, last = selective_scan(**inputs, return_last_state=True, backend='ref')
    assert last.shape == (1, 3, 2)


# ---------------------------------------------------------------------------------------------- bad input
def _bad(**changes):
    inputs = make_inputs(2, 4, 3, 5, dtype=torch.float32)
    inputs.update(changes)
    return inputs


@pytest.mark.parametrize('changes, pattern', [
    (dict(u=torch.zeros(2, 4)), r'u must have shape \(batch, channels, length\)'),
    (dict(delta=torch.zeros(2, 4, 6)), r'delta must have the shape of u \(2, 4, 5\)'),
    (dict(A=torch.zeros(3, 3)), r'A must have shape \(channels=4, d_state\)'),
    (dict(B=torch.zeros(2, 2, 5)), r'B must have shape \(batch=2, d_state=3, length=5\)'),
    (dict(C=torch.zeros(2, 1, 3, 4)), r'C must have shape'),
    (dict(B=torch.zeros(2, 3, 3, 5), C=torch.zeros(2, 3, 3, 5)), r'B has 3 groups, which must divide'),
    (dict(B=torch.zeros(2, 2, 3, 5)), r'B and C must have the same number of groups'),
    (dict(D=torch.zeros(5)), r'D must have shape \(channels=4,\)'),
    (dict(delta_bias=torch.zeros(4, 1)), r'delta_bias must have shape \(channels=4,\)'),
    (dict(z=torch.zeros(2, 4, 4)), r'z must have the shape of u'),
    (dict(A=torch.zeros(4, 3, dtype=torch.complex64)), r'A must be real'),
    (dict(u=torch.zeros(2, 4, 5, dtype=torch.int64)), r'u must be a floating-point tensor'),
    (dict(C=[[0.0]]), r'C must be a torch.Tensor'),
])
@pytest.mark.parametrize('fn', [selective_scan_ref, selective_scan_torch, selective_scan])
def test_bad_input_raises_value_error(fn, changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        fn(**_bad(**changes))


def test_bad_chunk_size():
    with pytest.raises(ValueError, match='chunk_size must be a positive int'):
        selective_scan_torch(**_bad(), chunk_size=0)


# ------------------------------------------------------------------------------------------- CUDA paths
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


@cuda
def test_torch_backend_on_cuda_matches_ref():
    inputs = make_inputs(2, 8, 4, 45, groups=1, dtype=torch.float32)
    y_ref, last_ref, g_ref = run_with_grads(selective_scan_ref, {k: v.double() for k, v in inputs.items()},
                                            delta_softplus=True)
    y, last, grads = run_with_grads(selective_scan_torch, {k: v.cuda() for k, v in inputs.items()},
                                    delta_softplus=True)
    assert_close_rel(y.cpu(), y_ref, 1e-5, 'output')
    for name in grads:
        assert_close_rel(grads[name].cpu(), g_ref[name], 1e-5, f'grad {name}')


@cuda
def test_mamba_kernel_matches_torch_backend():
    if ss._mamba_kernel()[0] is None:
        pytest.skip(ss._mamba_kernel()[1])
    inputs = {k: v.cuda() for k, v in make_inputs(2, 8, 4, 300, groups=1, dtype=torch.float32).items()}
    # The CUDA kernel ignores the gradient of last_state, so the functional leaves it out.
    y_m, last_m, g_m = run_with_grads(lambda **kw: selective_scan(**kw, backend='mamba'), inputs, last_weight=0.0,
                                      delta_softplus=True)
    y_t, last_t, g_t = run_with_grads(lambda **kw: selective_scan(**kw, backend='torch'), inputs, last_weight=0.0,
                                      delta_softplus=True)
    assert_close_rel(last_m.float(), last_t, 1e-4, 'last_state')
    assert_close_rel(y_m, y_t, 1e-4, 'output')
    for name in GRAD_NAMES:
        assert_close_rel(g_m[name], g_t[name], 1e-3, f'grad {name}')
