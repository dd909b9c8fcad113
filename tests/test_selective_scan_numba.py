"""Fused CPU ('numba') selective scan against the sequential oracle: outputs and every gradient."""
import pytest
import torch

import fke_basicsr.ops.selective_scan as ss
from fke_basicsr.ops import selective_scan_cpu
from fke_basicsr.ops.selective_scan import selective_scan, selective_scan_fused, selective_scan_ref
from test_selective_scan import GRAD_NAMES, assert_close_rel, make_inputs, run_with_grads

pytestmark = pytest.mark.skipif(not selective_scan_cpu.available()[0], reason='numba not installed')

CASES = [  # (b, d, n, L, groups, chunk): chunk = steps between the kernel's saved states
    (2, 4, 3, 37, None, 8),     # L not a multiple of the chunk
    (1, 6, 2, 1, 2, 8),         # L = 1
    (2, 4, 3, 50, 2, 7),        # two groups, odd chunk
    (1, 3, 2, 64, 1, 8),        # 4-D with G=1, exact multiple
    (1, 5, 4, 65, None, 64),    # one step past a chunk boundary
    (2, 3, 4, 23, None, 1),     # chunks of one step
    (1, 8, 8, 130, 4, 64),      # default chunk, four groups
]
OPTIONS = [
    dict(use_D=True, use_z=True, use_bias=True, delta_softplus=True),
    dict(use_D=False, use_z=False, use_bias=False, delta_softplus=False),
    dict(use_D=True, use_z=False, use_bias=True, delta_softplus=True),
]


def fused(**kw):
    return selective_scan_fused(**kw, kernel='numba')


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('options', OPTIONS)
def test_numba_matches_ref(case, options, monkeypatch):
    b, d, n, length, groups, chunk = case
    monkeypatch.setattr(selective_scan_cpu, 'CHUNK', chunk)
    inputs = make_inputs(b, d, n, length, groups)
    for key, flag in (('D', 'use_D'), ('z', 'use_z'), ('delta_bias', 'use_bias')):
        if not options[flag]:
            inputs.pop(key)
    softplus = options['delta_softplus']
    y_ref, last_ref, g_ref = run_with_grads(selective_scan_ref, inputs, delta_softplus=softplus)
    y, last, grads = run_with_grads(fused, {k: v.float() for k, v in inputs.items()}, delta_softplus=softplus)
    assert y.dtype == torch.float32 and y.shape == (b, d, length) and last.shape == (b, d, n)
    assert_close_rel(y, y_ref, 1e-5, 'output')
    assert_close_rel(last, last_ref, 1e-5, 'last_state')
    for name in inputs:
        if length == 1 and name == 'A':  # h_{-1} = 0: A has no influence on a single step
            assert grads[name].abs().max() == 0
            continue
        assert grads[name].dtype == torch.float32
        assert_close_rel(grads[name], g_ref[name], 1e-5, f'grad {name}')


def test_one_worker_and_many_agree(monkeypatch):
    # ∂B/∂C are summed over per-worker buffers: 1 and 2 workers must give the same gradients.
    inputs = make_inputs(2, 6, 4, 40, groups=2, dtype=torch.float32)
    runs = []
    for threads in (1, 2):
        monkeypatch.setattr(selective_scan_cpu, '_threads', lambda t=threads: selective_scan_cpu.numba.set_num_threads(
            min(t, selective_scan_cpu.numba.config.NUMBA_NUM_THREADS)) or t)
        runs.append(run_with_grads(fused, inputs, delta_softplus=True))
    (y1, l1, g1), (y2, l2, g2) = runs
    torch.testing.assert_close(y1, y2)
    for name in GRAD_NAMES:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-6, atol=1e-6 * g1[name].abs().max().item())


def test_large_decays_stay_finite():
    inputs = make_inputs(2, 4, 8, 48, groups=None, dtype=torch.float32)
    inputs['delta'] = inputs['delta'].abs() * 20 + 5
    inputs['A'] = -torch.arange(1.0, 9.0).repeat(4, 1) * 2  # Δ·A from -10 to below -400: exp underflows to 0
    y_ref, last_ref, g_ref = run_with_grads(selective_scan_ref, {k: v.double() for k, v in inputs.items()},
                                            delta_softplus=True)
    y, last, grads = run_with_grads(fused, inputs, delta_softplus=True)
    assert_close_rel(y, y_ref, 1e-5, 'output')
    assert_close_rel(last, last_ref, 1e-5, 'last_state')
    for name, grad in grads.items():
        assert_close_rel(grad, g_ref[name], 1e-5, f'grad {name}')


@pytest.mark.parametrize('low', [torch.bfloat16, torch.float16])
def test_low_precision_inputs(low):
    inputs = make_inputs(1, 4, 4, 40, groups=1, dtype=torch.float32)
    inputs['delta'] = inputs['delta'] * 40  # decays from ~1 down to exp(-hundreds)
    low_inputs = {k: (v.to(low) if k in ('u', 'delta', 'B', 'C', 'z') else v) for k, v in inputs.items()}
    y, _, grads = run_with_grads(lambda **kw: selective_scan(**kw, backend='numba'), low_inputs, delta_softplus=True)
    assert y.dtype == low
    expected = selective_scan_ref(**{k: v.float() for k, v in low_inputs.items()}, delta_softplus=True)
    torch.testing.assert_close(y.float(), expected, rtol=1e-2, atol=1e-2 * expected.abs().max().item())
    for name, grad in grads.items():
        assert grad.dtype == low_inputs[name].dtype and torch.isfinite(grad.float()).all(), name


def test_eval_forward_keeps_no_checkpoints():
    # Without autograd the kernel runs and gives the same output as with it.
    inputs = make_inputs(1, 4, 3, 70, dtype=torch.float32)
    with torch.no_grad():
        y0 = fused(**inputs, delta_softplus=True)
    y1 = fused(**{k: v.requires_grad_() for k, v in inputs.items()}, delta_softplus=True)
    torch.testing.assert_close(y0, y1.detach())


def test_auto_picks_numba_on_cpu(monkeypatch):
    monkeypatch.delenv(ss.SCAN_BACKEND_ENV, raising=False)
    name, why = ss.resolve_backend('cpu')
    assert name == 'numba' and 'numba' in why
    inputs = make_inputs(1, 3, 2, 9, dtype=torch.float32)
    torch.testing.assert_close(selective_scan(**inputs, delta_softplus=True),
                               selective_scan_ref(**inputs, delta_softplus=True))
    # fp64 under 'auto' stays exact through the torch backend
    inputs64 = make_inputs(1, 3, 2, 9)
    torch.testing.assert_close(selective_scan(**inputs64), selective_scan_ref(**inputs64), rtol=1e-12, atol=1e-12)
