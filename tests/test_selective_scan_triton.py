"""Triton selective scan against the sequential oracle, run through Triton's CPU interpreter.

TRITON_INTERPRET=1 must be set before triton is imported, so the parent test process runs this file again in a
subprocess with the variable set; there the interpreter tests run on CPU tensors. On a CUDA machine the same
cases also run on the GPU (the kernels compiled for real).
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

INTERPRETED = os.environ.get('TRITON_INTERPRET') == '1'
HAS_TRITON = importlib.util.find_spec('triton') is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason='triton not installed')

# (b, d, n, L, groups, block_d, chunk): chunk = time steps per scan tile, block_d = channels per program
CASES = [
    (2, 4, 3, 19, None, 4, 8),  # odd length across chunk boundaries, padded state size (3 -> 4)
    (1, 6, 2, 1, 2, 2, 8),      # L = 1, two groups
    (1, 6, 4, 16, 2, 4, 8),     # exact multiple of the chunk; a group of 3 channels in blocks of 4
    (2, 5, 4, 9, 1, 2, 4),      # 4-D with G=1, channels not a multiple of the block
]
OPTIONS = [
    dict(use_D=True, use_z=True, use_bias=True, delta_softplus=True),
    dict(use_D=False, use_z=False, use_bias=False, delta_softplus=False),
]


@needs_triton
@pytest.mark.skipif(INTERPRETED, reason='this is the subprocess')
def test_interpreter_cases_in_a_subprocess():
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider', __file__,
                           '-k', 'interpreted'], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert ' passed' in proc.stdout and 'skipped' not in proc.stdout.split('\n')[-2], proc.stdout[-2000:]


def _check(case, options, device, monkeypatch):
    from fke_basicsr.ops import selective_scan_triton as st
    from fke_basicsr.ops.selective_scan import selective_scan_fused, selective_scan_ref
    from test_selective_scan import assert_close_rel, make_inputs, run_with_grads

    b, d, n, length, groups, block_d, chunk = case
    monkeypatch.setattr(st, 'BLOCK_D', block_d)
    monkeypatch.setattr(st, 'CHUNK', chunk)
    inputs = make_inputs(b, d, n, length, groups)
    for key, flag in (('D', 'use_D'), ('z', 'use_z'), ('delta_bias', 'use_bias')):
        if not options[flag]:
            inputs.pop(key)
    softplus = options['delta_softplus']
    y_ref, last_ref, g_ref = run_with_grads(selective_scan_ref, inputs, delta_softplus=softplus)
    y, last, grads = run_with_grads(lambda **kw: selective_scan_fused(**kw, kernel='triton'),
                                    {k: v.float().to(device) for k, v in inputs.items()}, delta_softplus=softplus)
    assert y.dtype == torch.float32 and y.shape == (b, d, length) and last.shape == (b, d, n)
    assert_close_rel(y.cpu(), y_ref, 1e-5, 'output')
    assert_close_rel(last.cpu(), last_ref, 1e-5, 'last_state')
    for name in inputs:
        if length == 1 and name == 'A':  # h_{-1} = 0: A has no influence on a single step
            assert grads[name].abs().max() == 0
            continue
        assert_close_rel(grads[name].cpu(), g_ref[name], 1e-5, f'grad {name}')


@needs_triton
@pytest.mark.skipif(not INTERPRETED, reason='runs in the TRITON_INTERPRET=1 subprocess')
@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('options', OPTIONS)
def test_interpreted_matches_ref(case, options, monkeypatch):
    _check(case, options, 'cpu', monkeypatch)


@needs_triton
@pytest.mark.skipif(not INTERPRETED, reason='runs in the TRITON_INTERPRET=1 subprocess')
def test_interpreted_large_decays_and_backend_name(monkeypatch):
    from fke_basicsr.ops import selective_scan_triton as st
    from fke_basicsr.ops.selective_scan import resolve_backend, selective_scan, selective_scan_ref
    from test_selective_scan import assert_close_rel, make_inputs
    monkeypatch.setattr(st, 'BLOCK_D', 2)
    monkeypatch.setattr(st, 'CHUNK', 4)
    assert resolve_backend('cpu', 'triton')[0] == 'triton'
    inputs = make_inputs(1, 2, 4, 10, dtype=torch.float32)
    inputs['delta'] = inputs['delta'].abs() * 40 + 5  # Δ·A well below -100: decays underflow to 0
    y = selective_scan(**inputs, delta_softplus=True, backend='triton')
    assert_close_rel(y, selective_scan_ref(**{k: v.double() for k, v in inputs.items()}, delta_softplus=True),
                     1e-5, 'output')
    low = {k: (v.to(torch.bfloat16) if k in ('u', 'delta', 'B', 'C', 'z') else v) for k, v in inputs.items()}
    u = low['u'].clone().requires_grad_(True)
    out = selective_scan(**{**low, 'u': u}, delta_softplus=True, backend='triton')
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all() and torch.isfinite(u.grad.float()).all()


@needs_triton
@pytest.mark.skipif(INTERPRETED or not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('case', CASES)
def test_cuda_matches_ref(case, monkeypatch):
    _check(case, OPTIONS[0], 'cuda', monkeypatch)
