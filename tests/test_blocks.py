"""archs.blocks against functional references written from docs/architecture.md, Blocks (explicit loops, plain ops)."""
import math

import pytest
import torch
import torch.nn.functional as F

from fke_basicsr.archs.blocks import (BLOCK_KINDS, EVSS, EVSS2D, LayerNorm2d, LocalAvgPool2d, LocalNAFBlock,
                                      LocalNAFEVSBlock, NAFBlock, NAFEVSBlock, ResBlock, SimpleGate, VSBlock,
                                      build_block, set_scan_backend)

torch.set_num_threads(2)


def count(m):
    return sum(p.numel() for p in m.parameters())


def randomize(m, seed=0, std=0.3):
    """Non-trivial parameters (β, γ, λ_g start at 0, which would hide whole branches)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            if name.endswith(('norm1.weight', 'norm2.weight', 'norm_mamba.weight', 'out_norm.weight')):
                p.copy_(1 + noise)
            else:
                p.copy_(noise)
    return m


# ------------------------------------------------------------------------------------------ references
def ln2d_ref(x, w, b, eps=1e-6):
    mu = x.mean(1, keepdim=True)
    var = ((x - mu) ** 2).mean(1, keepdim=True)
    return w.view(1, -1, 1, 1) * (x - mu) / torch.sqrt(var + eps) + b.view(1, -1, 1, 1)


def conv(x, m, **kw):
    return F.conv2d(x, m.weight, m.bias, **kw)


def scan_loop(u, dt, A, Bm, Cm, D, bias):
    """Mamba recurrence, one time step at a time: h_t = exp(ΔA)h + ΔB u, y = <C, h> + D u."""
    delta = F.softplus(dt + bias.view(1, -1, 1))
    h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(u.shape[-1]):
        d_t = delta[:, :, t, None]
        h = torch.exp(d_t * A) * h + d_t * Bm[:, None, :, t] * u[:, :, t, None]
        ys.append((h * Cm[:, None, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, dim=-1)


def ref_windows(n, k):
    """Window starts along an axis (full windows, then one snapped to the border) and the owned ranges."""
    k = min(k, n)
    starts = list(range(0, n - k + 1, k))
    if starts[-1] + k < n:
        starts.append(n - k)
    owned = [((starts[i - 1] + k) if i else 0, s + k) for i, s in enumerate(starts)]
    return starts, owned, k


def evss2d_ref(m, x, window=None):
    b, c, h, w = x.shape
    d, r, n = m.d_inner, m.dt_rank, m.d_state
    u, z = (x.permute(0, 2, 3, 1) @ m.in_proj.weight.T).chunk(2, dim=-1)
    u = F.gelu(conv(u.permute(0, 3, 1, 2), m.conv2d, padding=1, groups=d))

    def scan_map(um):
        bb, _, hh, ww = um.shape
        seq = um.reshape(bb, d, hh * ww)
        p = m.x_proj_weight[0] @ seq
        p = F.conv1d(p, m.x_conv.weight, m.x_conv.bias, padding=3, groups=p.shape[1])
        dt, bm, cm = p.split([r, n, n], dim=1)
        y = scan_loop(seq, m.dt_projs_weight[0] @ dt, -torch.exp(m.A_logs), bm, cm, m.Ds, m.dt_projs_bias[0])
        return y.view(bb, d, hh, ww)

    if window is None or (h <= window and w <= window):
        y = scan_map(u)
    else:
        y = torch.zeros_like(u)
        rs, rown, kh = ref_windows(h, window)
        cs, cown, kw = ref_windows(w, window)
        for r0, (rlo, rhi) in zip(rs, rown):
            for c0, (clo, chi) in zip(cs, cown):
                yw = scan_map(u[..., r0:r0 + kh, c0:c0 + kw])
                y[..., rlo:rhi, clo:chi] = yw[..., rlo - r0:rhi - r0, clo - c0:chi - c0]
    y = F.layer_norm(y.permute(0, 2, 3, 1), (d,), m.out_norm.weight, m.out_norm.bias, 1e-5) * F.gelu(z)
    return (y @ m.out_proj.weight.T).permute(0, 3, 1, 2)


def gated(m, x):
    z = conv(ln2d_ref(x, m.norm1.weight, m.norm1.bias), m.conv1)
    a, b = conv(z, m.conv2, padding=1, groups=z.shape[1]).chunk(2, dim=1)
    return a * b


def ffn_ref(m, y):
    a, b = conv(ln2d_ref(y, m.norm2.weight, m.norm2.bias), m.conv4).chunk(2, dim=1)
    return y + m.gamma * conv(a * b, m.conv5)


def naf_ref(m, x, pool=lambda g: g.mean((-2, -1), keepdim=True)):
    g = gated(m, x)
    y = x + m.beta * conv(g * conv(pool(g), m.sca[1]), m.conv3)
    return ffn_ref(m, y)


def nafevs_ref(m, x, idx, window=None):
    x = x.transpose(-2, -1) if idx % 2 == 0 else torch.flip(x, dims=(-2, -1))
    g = gated(m, x)
    local = conv(g * conv(g.mean((-2, -1), keepdim=True), m.sca[1]), m.conv3)
    glob = evss2d_ref(m.attn, ln2d_ref(g, m.norm_mamba.weight, m.norm_mamba.bias), window) * (m.alpha + 1)
    y = x + m.beta * (m.lamb_l * local + m.lamb_g * glob)
    return ffn_ref(m, y)


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize('c,evss', [(48, 18200), (96, 65072), (192, 245216)])
def test_parameter_counts(c, evss):
    assert count(EVSS2D(c)) == evss
    assert count(NAFBlock(c)) == 7 * c * c + 33 * c
    assert count(LocalNAFBlock(c, 64)) == 7 * c * c + 33 * c
    assert count(EVSS(c)) == evss + 2 * c
    nafevs = 7 * c * c + 33 * c + 2 * c + evss + 3 * c  # NAF + norm_mamba + EVSS2D + λ_l, λ_g, α
    assert count(NAFEVSBlock(c, 0)) == count(LocalNAFEVSBlock(c, 1, 64, 32)) == nafevs
    assert count(ResBlock(c)) == 2 * (9 * c * c + c)
    assert count(VSBlock(c)) == evss + 2 * c + 2 * c + (2 * c * c + 2 * c) + (c * c + c) + c


def test_nafevs_counts_from_spec():
    assert count(NAFEVSBlock(96, 0)) == 133232
    assert count(NAFEVSBlock(192, 3)) == 510560


def test_state_dict_layout_and_shapes():
    c, d = 96, 192
    sd = {k: tuple(v.shape) for k, v in NAFEVSBlock(c, 0).state_dict().items()}
    expected = {
        'conv1.weight': (2 * c, c, 1, 1), 'conv1.bias': (2 * c,), 'conv2.weight': (2 * c, 1, 3, 3),
        'conv2.bias': (2 * c,), 'conv3.weight': (c, c, 1, 1), 'conv3.bias': (c,), 'sca.1.weight': (c, c, 1, 1),
        'sca.1.bias': (c,), 'conv4.weight': (2 * c, c, 1, 1), 'conv4.bias': (2 * c,), 'conv5.weight': (c, c, 1, 1),
        'conv5.bias': (c,), 'norm1.weight': (c,), 'norm1.bias': (c,), 'norm2.weight': (c,), 'norm2.bias': (c,),
        'beta': (1, c, 1, 1), 'gamma': (1, c, 1, 1), 'norm_mamba.weight': (c,), 'norm_mamba.bias': (c,),
        'lamb_l': (1, c, 1, 1), 'lamb_g': (1, c, 1, 1), 'alpha': (1, c, 1, 1),
        'attn.in_proj.weight': (2 * d, c), 'attn.conv2d.weight': (d, 1, 3, 3), 'attn.conv2d.bias': (d,),
        'attn.x_proj_weight': (1, 22, d), 'attn.x_conv.weight': (22, 1, 7), 'attn.x_conv.bias': (22,),
        'attn.dt_projs_weight': (1, d, 6), 'attn.dt_projs_bias': (1, d), 'attn.A_logs': (d, 8), 'attn.Ds': (d,),
        'attn.out_norm.weight': (d,), 'attn.out_norm.bias': (d,), 'attn.out_proj.weight': (c, d)}
    assert sd == expected
    naf = {k for k in NAFBlock(48).state_dict()}
    assert naf == {k for k in expected if not k.startswith(('attn.', 'norm_mamba', 'lamb', 'alpha'))}
    assert set(EVSS(48).state_dict()) == {'norm1.weight', 'norm1.bias'} | {
        k for k in expected if k.startswith('attn.')}


def test_official_block_keys_from_key_file():
    from conftest import KEYS_DIR
    path = KEYS_DIR / 'deeprftv2_B_official_keys.txt'
    rows = [line.split('\t') for line in path.read_text().splitlines() if line.strip()]
    table = {k: tuple(int(v) for v in s.strip('[]').split(',') if v.strip()) for k, s in rows}

    def under(prefix):
        return {k[len(prefix):]: v for k, v in table.items() if k.startswith(prefix)}

    def ours(m):
        return {k: tuple(v.shape) for k, v in m.state_dict().items()}

    assert ours(NAFBlock(48)) == under('global_model.subnets_max.0.level0.blocks.0.')
    assert ours(NAFEVSBlock(96, 0)) == under('global_model.subnets_max.0.level1.blocks.0.')
    assert ours(NAFEVSBlock(192, 1)) == under('global_model.subdenets_max.1.level0.blocks.7.')
    assert ours(EVSS(48)) == under('global_model.kernel_estimator.0.subnets_ker.level2.blocks.0.')


def test_mamba_initialisation():
    torch.manual_seed(0)
    m = EVSS2D(96)
    torch.testing.assert_close(m.A_logs, torch.log(torch.arange(1., 9.)).repeat(192, 1))
    torch.testing.assert_close(m.Ds, torch.ones(192))
    dt = F.softplus(m.dt_projs_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert m.dt_projs_weight.abs().max() <= 6 ** -0.5
    assert m.x_proj_weight.abs().max() <= 1 / math.sqrt(192)
    assert m.in_proj.bias is None and m.out_proj.bias is None and m.conv2d.bias is not None
    assert getattr(m.A_logs, '_no_weight_decay', False) and getattr(m.Ds, '_no_weight_decay', False)


def test_layernorm_and_gate():
    ln = randomize(LayerNorm2d(6))
    x = torch.randn(2, 6, 5, 4) * 3 + 1
    torch.testing.assert_close(ln(x), ln2d_ref(x, ln.weight, ln.bias))
    assert ln.eps == 1e-6
    torch.testing.assert_close(SimpleGate()(x), x[:, :3] * x[:, 3:])


@pytest.mark.parametrize('window,size', [((3, 4), (7, 9)), ((7, 3), (7, 9)), ((2, 2), (5, 5)), ((1, 1), (3, 4))])
def test_local_avg_pool(window, size):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    out = LocalAvgPool2d(window)(x)
    kh, kw = min(window[0], size[0]), min(window[1], size[1])
    box = F.avg_pool2d(x, (kh, kw), stride=1)
    dh, dw = size[0] - box.shape[-2], size[1] - box.shape[-1]
    ref = F.pad(box, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode='replicate')
    torch.testing.assert_close(out, ref)


def test_local_avg_pool_global_fallback():
    x = torch.randn(1, 2, 6, 5)
    torch.testing.assert_close(LocalAvgPool2d((6, 5))(x), x.mean((-2, -1), keepdim=True))
    torch.testing.assert_close(LocalAvgPool2d(100)(x), x.mean((-2, -1), keepdim=True))
    assert LocalAvgPool2d((6, 4))(x).shape == x.shape  # one axis smaller than the map: local pooling


def test_nafblock_matches_reference():
    m = randomize(NAFBlock(8))
    x = torch.randn(2, 8, 6, 5)
    torch.testing.assert_close(m(x), naf_ref(m, x))


def test_local_nafblock_pooling_window():
    m = randomize(LocalNAFBlock(8, train_size=4))  # window ⌊1.5·4⌋ = 6
    assert m.sca[0].window == (6, 6)
    x = torch.randn(1, 8, 10, 7)
    torch.testing.assert_close(m(x), naf_ref(m, x, pool=LocalAvgPool2d(6)))
    assert not torch.allclose(m(x), naf_ref(m, x))
    small = torch.randn(1, 8, 6, 6)  # window covers the map: identical to the global-pool NAFBlock
    torch.testing.assert_close(m(small), naf_ref(m, small))
    assert LocalNAFBlock(8, (4, 8)).sca[0].window == (6, 12)


def test_evss2d_matches_sequential_reference_and_backends():
    m = randomize(EVSS2D(16), std=0.2)
    x = torch.randn(2, 16, 5, 6)
    ref = evss2d_ref(m, x)
    torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5)
    outs, grads = [], []
    for backend in ('ref', 'torch'):
        set_scan_backend(m, backend)
        xx = x.clone().requires_grad_()
        y = m(xx)
        y.square().sum().backward()
        outs.append(y.detach())
        grads.append([xx.grad] + [p.grad.clone() for p in m.parameters()])
        m.zero_grad()
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_evss2d_windowed_scan():
    m = randomize(EVSS2D(8, window=4), std=0.2)
    x = torch.randn(1, 8, 10, 12)  # rows: windows at 0, 4 and 6 (snapped); cols: 0, 4, 8
    torch.testing.assert_close(m(x), evss2d_ref(m, x, window=4), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(m(x), evss2d_ref(m, x), atol=1e-4)
    big = randomize(EVSS2D(8, window=16), std=0.2)
    torch.testing.assert_close(big(x), evss2d_ref(big, x), rtol=1e-4, atol=1e-5)


def test_nafevs_orientation_matches_reference():
    x = torch.randn(1, 8, 6, 4)
    for idx in range(4):
        m = randomize(NAFEVSBlock(8, idx), seed=idx, std=0.2)
        out = m(x)
        assert out.shape == ((1, 8, 4, 6) if idx % 2 == 0 else (1, 8, 6, 4))
        torch.testing.assert_close(out, nafevs_ref(m, x, idx), rtol=1e-4, atol=1e-5)
    # not undone: a block's output is oriented; four blocks (T, F, T, F) bring the map back to H×W
    blocks = torch.nn.Sequential(*[NAFEVSBlock(8, i) for i in range(4)])
    assert blocks(x).shape == x.shape
    # at initialisation (β = γ = 0) a block is exactly its re-orientation
    fresh = NAFEVSBlock(8, 1)
    torch.testing.assert_close(fresh(x), torch.flip(x, dims=(-2, -1)))
    torch.testing.assert_close(NAFEVSBlock(8, 0)(x), x.transpose(-2, -1))


def test_local_nafevs_block():
    m = randomize(LocalNAFEVSBlock(8, 2, train_size=2, window=4), std=0.2)
    assert isinstance(m.sca[0], LocalAvgPool2d) and m.sca[0].window == (3, 3) and m.attn.window == (4, 4)
    x = torch.randn(1, 8, 6, 10)
    xo = x.transpose(-2, -1)
    g = gated(m, xo)
    local = conv(g * conv(LocalAvgPool2d(3)(g), m.sca[1]), m.conv3)
    glob = evss2d_ref(m.attn, ln2d_ref(g, m.norm_mamba.weight, m.norm_mamba.bias), window=4) * (m.alpha + 1)
    ref = ffn_ref(m, xo + m.beta * (m.lamb_l * local + m.lamb_g * glob))
    torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5)


def test_resblock_and_vsblock():
    r = randomize(ResBlock(4))
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(r(x), x + conv(F.relu(conv(x, r.conv1, padding=1)), r.conv2, padding=1))
    v = randomize(VSBlock(8), std=0.2)
    x = torch.randn(1, 8, 4, 5)
    y = x + evss2d_ref(v.attn, ln2d_ref(x, v.norm1.weight, v.norm1.bias))
    torch.testing.assert_close(v(x), ffn_ref(v, y), rtol=1e-4, atol=1e-5)


def test_build_block():
    assert type(build_block('naf', 8, 0)) is NAFBlock
    b = build_block('NAFEVSBlock', 8, 3)
    assert type(b) is NAFEVSBlock and b.idx == 3 and b.attn.window is None
    assert type(build_block('localnaf', 8, 0, train_size=16)) is LocalNAFBlock
    b = build_block('LocalNAFEVSBlock_patch', 8, 2, train_size=16, window=32)
    assert type(b) is LocalNAFEVSBlock and b.idx == 2 and b.attn.window == (32, 32)
    assert type(build_block('EVSS', 8, 0, window=32)) is EVSS
    assert type(build_block('ResBlock', 8, 0)) is ResBlock and type(build_block('VSBlock', 8, 0)) is VSBlock
    assert set(BLOCK_KINDS) == {'naf', 'NAFEVSBlock', 'localnaf', 'LocalNAFEVSBlock_patch', 'EVSS', 'ResBlock',
                                'VSBlock'}
    with pytest.raises(ValueError, match="kind must be one of .*'naf'.*'VSBlock'"):
        build_block('LocaNAFEVSBlock', 8, 0)
    with pytest.raises(ValueError, match='train_size'):
        build_block('localnaf', 8, 0)
    with pytest.raises(ValueError, match='window'):
        EVSS2D(8, window=0)


def test_autocast_bf16_forward_and_backward():
    m = randomize(NAFEVSBlock(8, 0), std=0.2)
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = m(x)
    assert torch.isfinite(y.float()).all()
    torch.testing.assert_close(y.float(), m(x), rtol=0.1, atol=0.1)
    y.float().sum().backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in m.parameters())
