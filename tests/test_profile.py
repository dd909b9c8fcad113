"""fke_basicsr.profile: MAC conventions against hand-computed counts, FFT/scan op counts, the paper's targets."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fke_basicsr  # noqa: F401
from fke_basicsr import profile

TINY = {'type': 'DeepRFTv2', 'variant': 'S', 'width': 8, 'enc_blocks': [1, 1, 1], 'dec_blocks': [1, 1, 1],
        'fke_width': 8}


class _Toy(nn.Module):
    """One of each kind ptflops treats specially, with sizes small enough to count by hand."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)              # bias
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2, bias=False)
        self.c1d = nn.Conv1d(2, 2, 3, padding=1)
        self.lin = nn.Linear(2, 5)                             # bias, 3-D input
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(5)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.w = nn.Parameter(torch.randn(7, 5))

    def forward(self, x):
        y = self.dw(self.conv(x))                              # (1, 4, 6, 6)
        s = self.pool(y)                                       # (1, 4, 1, 1)
        y = torch.mul(y, s)                                    # counted (function form)
        y = y * s                                              # operator: not counted
        y = self.up(y)                                         # (1, 2, 12, 12)
        t = self.c1d(y.flatten(2))                             # (1, 2, 144)
        t = self.lin(t.transpose(1, 2))                        # (1, 144, 5)
        t = self.norm(self.act(t))
        t = F.gelu(t)
        e = torch.einsum('blc,dc->bld', t, self.w)             # (1, 144, 7): einsum MACs only
        return F.interpolate(e[:, None], size=(12, 14))


def test_ptflops_conventions_by_hand():
    originals = (torch.mul, torch.Tensor.add, F.gelu, F.interpolate, torch.einsum)
    rep = profile.count_macs(_Toy(), torch.rand(1, 3, 6, 6))
    assert (torch.mul, torch.Tensor.add, F.gelu, F.interpolate, torch.einsum) == originals  # patches undone
    conv = 3 * 3 * 3 * 4 * 36
    dw = 3 * 3 * 1 * 4 * 36
    up = 2 * 2 * 4 * 2 * 36                                    # per *input* position
    c1d = 3 * 2 * 2 * 144
    lin = 2 * 5 * 144
    assert rep.macs_conv_linear == conv + dw + up + c1d + lin
    assert rep.macs_conv_linear_bias == 4 * 36 + 2 * 144 + 5 * 144
    extra = (4 * 36                      # conv bias
             + 2 * 144                   # Conv1d bias
             + 5 * 144                   # Linear bias
             + 2 * (4 * 36)              # AdaptiveAvgPool2d module + its F.adaptive_avg_pool2d (as ptflops)
             + 4 * 36                    # torch.mul
             + 2 * 720 + 720             # nn.GELU (module + F.gelu inside) and the explicit F.gelu
             + 720                       # nn.LayerNorm (no `affine` attribute → ×1)
             + 12 * 14)                  # F.interpolate: output positions × (B·C)
    assert rep.macs_ptflops == conv + dw + up + c1d + lin + extra
    assert rep.macs_einsum == 144 * 5 * 7


def test_fft_and_scan_counts_of_one_fke():
    from fke_basicsr.archs.fke import FourierKernelEstimator

    fke = FourierKernelEstimator(in_channels=8, width=8)
    ops = profile.count_fft_and_scan(fke, torch.rand(1, 8, 16, 16), stub_scan=False)
    n = 16 * 16
    assert ops.fft_calls == 3
    assert ops.fft_sizes == {'rfft2 16x16': 16, 'irfft2 16x16': 8}
    assert ops.fft_ops == pytest.approx(24 * 2.5 * n * math.log2(n))
    d, length = 16, 16 * 9                                      # EVSS2D d_inner = 2·8 on the 16×9 spectral map
    assert ops.scan_calls == 4
    assert ops.scan_ops == 4 * d * length * (7 * 8 + 5)
    assert ops.fke_spectral_product_ops == 6 * 8 * 16 * 9


def test_stub_scan_changes_no_count():
    from fke_basicsr.archs.fke import FourierKernelEstimator

    model = FourierKernelEstimator(in_channels=8, width=8)
    x = torch.rand(1, 8, 16, 16)
    a, oa = profile.count_all(model, x, stub_scan=True)
    b, ob = profile.count_all(model, x, stub_scan=False)
    assert (a.macs_ptflops, a.macs_conv_linear, a.macs_einsum) == (b.macs_ptflops, b.macs_conv_linear, b.macs_einsum)
    assert (oa.fft_ops, oa.scan_ops) == (ob.fft_ops, ob.scan_ops)


@pytest.mark.parametrize('variant,params,conv_linear,ptflops,size', [
    ('S', 21_191_096, 74.35e9, 75.33e9, 32),
    ('B', 30_117_560, 118.81e9, 120.30e9, 64),
])
def test_paper_targets(variant, params, conv_linear, ptflops, size):
    """docs/architecture.md: parameters exact; MACs at 256² in both conventions. Conv/linear work scales with H·W
    except the FKEs' H·(W/2+1) spectral maps (≈0.2 % at 64², 0.5 % at 32²), so the small-size count × (256/size)²
    must land within 1 % of the 256² figures."""
    torch.manual_seed(0)
    model = profile.build_model({'type': 'DeepRFTv2', 'variant': variant})
    assert profile.count_parameters(model) == params == sum(p.numel() for p in model.parameters())
    macs, _ = profile.count_all(model, torch.rand(1, 3, size, size))
    factor = (256 / size) ** 2
    assert macs.macs_conv_linear * factor == pytest.approx(conv_linear, rel=0.01)
    assert macs.macs_ptflops * factor == pytest.approx(ptflops, rel=0.01)
    # the conventions differ by bias adds and element-wise module work only: 1.49 G (-B) / 0.98 G (-S) at 256²
    assert (macs.macs_ptflops - macs.macs_conv_linear) * factor == pytest.approx(ptflops - conv_linear, rel=0.01)


def test_cli_table_json_latency_memory(tmp_path, capsys):
    out = tmp_path / 'p.json'
    argv = ['--arch', 'DeepRFTv2', '--variant', 'S', '--size', '16', '16', '--json', str(out), '--latency',
            '--warmup', '0', '--reps', '1', '--memory', '--device', 'cpu', '--threads', '1']
    for k, v in TINY.items():
        if k not in ('type', 'variant'):
            argv += ['--set', f'{k}={json.dumps(v)}']
    assert profile.main(argv) == 0
    table = capsys.readouterr().out
    assert 'MACs ptflops-module convention' in table and 'reversible on' in table and '1 threads' in table
    r = json.loads(out.read_text())
    assert r['params'] == profile.count_parameters(profile.build_model(TINY))
    assert r['latency']['reps'] == 1 and r['latency']['median_s'] > 0
    mem = {m['reversible']: m for m in r['training_memory']}
    assert set(mem) == {True, False} and all(m['peak_bytes'] > 0 for m in mem.values())


def test_errors():
    with pytest.raises(ValueError, match='exactly one'):
        profile.network_options(None, None)
    with pytest.raises(ValueError, match='not a registered arch'):
        profile.build_model({'type': 'DeepRFTv3'})
    with pytest.raises(ValueError, match='key=value'):
        profile.parse_sets(['width'])
    with pytest.raises(ValueError, match='batch size 1'):
        profile.count_macs(nn.Identity(), torch.rand(2, 3, 4, 4))
