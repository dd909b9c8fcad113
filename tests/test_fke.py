"""archs.fke: the Fourier Kernel Estimator against a functional reference of docs/architecture.md."""
import pytest
import torch
import torch.nn.functional as F

from conftest import KEYS_DIR
from fke_basicsr.archs.blocks import set_scan_backend
from fke_basicsr.archs.fke import FKE_OFFICIAL_RENAMES, FKEOutput, FourierKernelEstimator, fke_official_renames
from test_blocks import evss2d_ref, ln2d_ref, randomize

torch.set_num_threads(2)

# Official keys of DeepRFTv2-B's `global_model.kernel_estimator.1.` (a later column, with image head), copied
# from tests/data/official_keys/deeprftv2_B_official_keys.txt; first column lacks the three `fusion.down.0` convs, ATD's
# FKE lacks `end_feature1` (docs/architecture.md, ATD-light + FKE).
OFFICIAL_LATER_COLUMN = """
    deblur_feature1.0.weight [48, 96, 1, 1]
    end_feature1.0.bias [3]
    end_feature1.0.weight [3, 48, 3, 3]
    end_ker1.ending.0.bias [96]
    end_ker1.ending.0.weight [96, 48, 1, 1]
    end_ker1.norm.bias [48]
    end_ker1.norm.weight [48]
    feature_extract.intro_deconv.0.weight [48, 48, 1, 1]
    feature_extract.intro_inp.0.weight [48, 48, 1, 1]
    intro.ending.0.weight [48, 96, 1, 1]
    subnets_ker.alpha0 [1, 48, 1, 1]
    subnets_ker.alpha1 [1, 48, 1, 1]
    subnets_ker.alpha2 [1, 48, 1, 1]
    subnets_ker.alpha3 [1, 48, 1, 1]
    subnets_ker.level0.blocks.0.attn.A_logs [96, 8]
    subnets_ker.level0.blocks.0.attn.Ds [96]
    subnets_ker.level0.blocks.0.attn.conv2d.bias [96]
    subnets_ker.level0.blocks.0.attn.conv2d.weight [96, 1, 3, 3]
    subnets_ker.level0.blocks.0.attn.dt_projs_bias [1, 96]
    subnets_ker.level0.blocks.0.attn.dt_projs_weight [1, 96, 3]
    subnets_ker.level0.blocks.0.attn.in_proj.weight [192, 48]
    subnets_ker.level0.blocks.0.attn.out_norm.bias [96]
    subnets_ker.level0.blocks.0.attn.out_norm.weight [96]
    subnets_ker.level0.blocks.0.attn.out_proj.weight [48, 96]
    subnets_ker.level0.blocks.0.attn.x_conv.bias [19]
    subnets_ker.level0.blocks.0.attn.x_conv.weight [19, 1, 7]
    subnets_ker.level0.blocks.0.attn.x_proj_weight [1, 19, 96]
    subnets_ker.level0.blocks.0.norm1.bias [48]
    subnets_ker.level0.blocks.0.norm1.weight [48]
    subnets_ker.level0.fusion.down.0.bias [48]
    subnets_ker.level0.fusion.down.0.weight [48, 96, 1, 1]
    subnets_ker.level1.blocks.0.attn.A_logs [96, 8]
    subnets_ker.level1.blocks.0.attn.Ds [96]
    subnets_ker.level1.blocks.0.attn.conv2d.bias [96]
    subnets_ker.level1.blocks.0.attn.conv2d.weight [96, 1, 3, 3]
    subnets_ker.level1.blocks.0.attn.dt_projs_bias [1, 96]
    subnets_ker.level1.blocks.0.attn.dt_projs_weight [1, 96, 3]
    subnets_ker.level1.blocks.0.attn.in_proj.weight [192, 48]
    subnets_ker.level1.blocks.0.attn.out_norm.bias [96]
    subnets_ker.level1.blocks.0.attn.out_norm.weight [96]
    subnets_ker.level1.blocks.0.attn.out_proj.weight [48, 96]
    subnets_ker.level1.blocks.0.attn.x_conv.bias [19]
    subnets_ker.level1.blocks.0.attn.x_conv.weight [19, 1, 7]
    subnets_ker.level1.blocks.0.attn.x_proj_weight [1, 19, 96]
    subnets_ker.level1.blocks.0.norm1.bias [48]
    subnets_ker.level1.blocks.0.norm1.weight [48]
    subnets_ker.level1.fusion.down.0.bias [48]
    subnets_ker.level1.fusion.down.0.weight [48, 96, 1, 1]
    subnets_ker.level2.blocks.0.attn.A_logs [96, 8]
    subnets_ker.level2.blocks.0.attn.Ds [96]
    subnets_ker.level2.blocks.0.attn.conv2d.bias [96]
    subnets_ker.level2.blocks.0.attn.conv2d.weight [96, 1, 3, 3]
    subnets_ker.level2.blocks.0.attn.dt_projs_bias [1, 96]
    subnets_ker.level2.blocks.0.attn.dt_projs_weight [1, 96, 3]
    subnets_ker.level2.blocks.0.attn.in_proj.weight [192, 48]
    subnets_ker.level2.blocks.0.attn.out_norm.bias [96]
    subnets_ker.level2.blocks.0.attn.out_norm.weight [96]
    subnets_ker.level2.blocks.0.attn.out_proj.weight [48, 96]
    subnets_ker.level2.blocks.0.attn.x_conv.bias [19]
    subnets_ker.level2.blocks.0.attn.x_conv.weight [19, 1, 7]
    subnets_ker.level2.blocks.0.attn.x_proj_weight [1, 19, 96]
    subnets_ker.level2.blocks.0.norm1.bias [48]
    subnets_ker.level2.blocks.0.norm1.weight [48]
    subnets_ker.level2.fusion.down.0.bias [48]
    subnets_ker.level2.fusion.down.0.weight [48, 96, 1, 1]
    subnets_ker.level3.blocks.0.attn.A_logs [96, 8]
    subnets_ker.level3.blocks.0.attn.Ds [96]
    subnets_ker.level3.blocks.0.attn.conv2d.bias [96]
    subnets_ker.level3.blocks.0.attn.conv2d.weight [96, 1, 3, 3]
    subnets_ker.level3.blocks.0.attn.dt_projs_bias [1, 96]
    subnets_ker.level3.blocks.0.attn.dt_projs_weight [1, 96, 3]
    subnets_ker.level3.blocks.0.attn.in_proj.weight [192, 48]
    subnets_ker.level3.blocks.0.attn.out_norm.bias [96]
    subnets_ker.level3.blocks.0.attn.out_norm.weight [96]
    subnets_ker.level3.blocks.0.attn.out_proj.weight [48, 96]
    subnets_ker.level3.blocks.0.attn.x_conv.bias [19]
    subnets_ker.level3.blocks.0.attn.x_conv.weight [19, 1, 7]
    subnets_ker.level3.blocks.0.attn.x_proj_weight [1, 19, 96]
    subnets_ker.level3.blocks.0.norm1.bias [48]
    subnets_ker.level3.blocks.0.norm1.weight [48]
"""


def parse_keys(text):
    table = {}
    for line in text.strip().splitlines():
        name, shape = line.split(maxsplit=1)
        table[name] = tuple(int(v) for v in shape.strip().strip('[]').split(',') if v.strip())
    return table


def official(later, head):
    table = parse_keys(OFFICIAL_LATER_COLUMN)
    return {k: v for k, v in table.items() if (later or '.fusion.' not in k) and (head or 'end_feature1' not in k)}


def rename(state_dict, pairs=FKE_OFFICIAL_RENAMES):
    out = {}
    for key, value in state_dict.items():
        hits = [(ours, theirs) for ours, theirs in pairs
                if key == ours or (ours.endswith('.') and key.startswith(ours))]
        assert len(hits) == 1, f'{key}: {hits}'
        ours, theirs = hits[0]
        out[theirs + key[len(ours):]] = tuple(value.shape)
    return out


def count(m):
    return sum(p.numel() for p in m.parameters())


def make(seed=0, **kw):
    """A small FKE with non-trivial weights; column scales kept away from 0 (they are divided by in reverse)."""
    kw = {'in_channels': 8, 'width': 8, **kw}
    m = randomize(FourierKernelEstimator(**kw), seed=seed, std=0.2)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for a in m.column.alphas:
            a.copy_(0.3 + 0.5 * torch.rand(a.shape, generator=g))
    return m


def spectral_ref(m, a, b, state=None):
    """FKE steps 2–5 (docs/architecture.md) on projected maps a, b: torch.fft, explicit level loop, sequential scans."""
    h, w = a.shape[-2:]
    if m.pad_to_even:
        pad = (0, w % 2, 0, h % 2)
        a, b = F.pad(a, pad, mode='reflect'), F.pad(b, pad, mode='reflect')
    A, Y = torch.fft.rfft2(a), torch.fft.rfft2(b)
    x = F.conv2d(torch.cat([A.real, A.imag], dim=1), m.spectral_embed.weight)
    levels = len(m.column.levels)
    rs = []
    for j in range(levels):
        level = m.column.levels[j]
        if state is not None and j < levels - 1:
            x = F.conv2d(torch.cat([x, state[j + 1]], dim=1), level.fusion.weight, level.fusion.bias)
        blk = level.block
        r = x + evss2d_ref(blk.attn, ln2d_ref(x, blk.norm1.weight, blk.norm1.bias))
        if state is not None:
            r = r + m.column.alphas[j] * state[j]
        rs.append(r)
        x = r
    k = F.conv2d(ln2d_ref(rs[-1], m.otf_head.norm.weight, m.otf_head.norm.bias), m.otf_head.proj.weight,
                 m.otf_head.proj.bias)
    otf = torch.complex(k[:, :m.width], k[:, m.width:])
    return torch.fft.irfft2(Y * otf)[..., :h, :w], rs


def head_ref(m, f, feat, blur=None):
    """FKE steps 6–7: fusion conv on [filtered, input], optional 3×3 image head + blur."""
    out = F.conv2d(torch.cat([f, feat], dim=1), m.fuse.weight)
    img = None if m.image_head is None else F.conv2d(out, m.image_head.weight, m.image_head.bias, padding=1) + blur
    return out, img


def fke_ref(m, feat, state=None, blur=None):
    """The whole FKE (steps 1–7) without tiling."""
    a, b = F.conv2d(feat, m.proj_kernel.weight), F.conv2d(feat, m.proj_feature.weight)
    f, rs = spectral_ref(m, a, b, state)
    out, img = head_ref(m, f, feat, blur)
    return out, rs, img


def windowed_ref(m, feat, window, state=None):
    """Training-time FKE tiling: spectral part per non-overlapping window (border windows snapped), each
    pixel taken from the window that owns it, state per window (window-major in the batch)."""
    from test_blocks import ref_windows
    bsz, _, h, w = feat.shape
    a, b = F.conv2d(feat, m.proj_kernel.weight), F.conv2d(feat, m.proj_feature.weight)
    rs_, rown, kh = ref_windows(h, window)
    cs_, cown, kw = ref_windows(w, window)
    f = torch.zeros_like(b)
    states, k = [], 0
    for r0, (rlo, rhi) in zip(rs_, rown):
        for c0, (clo, chi) in zip(cs_, cown):
            st = None if state is None else [s[k * bsz:(k + 1) * bsz] for s in state]
            ft, rs = spectral_ref(m, a[..., r0:r0 + kh, c0:c0 + kw], b[..., r0:r0 + kh, c0:c0 + kw], st)
            f[..., rlo:rhi, clo:chi] = ft[..., rlo - r0:rhi - r0, clo - c0:chi - c0]
            states.append(rs)
            k += 1
    out, _ = head_ref(m, f, feat)
    return out, [torch.cat([t[j] for t in states]) for j in range(len(states[0]))]


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# ------------------------------------------------------------------------------------------ structure
def test_parameter_counts():
    assert count(FourierKernelEstimator(image_head=True)) == 93299
    assert count(FourierKernelEstimator(first_column=False, image_head=True)) == 107267
    assert count(FourierKernelEstimator()) == 92000
    assert count(FourierKernelEstimator(first_column=False, pad_to_even=True)) == 105968
    head = FourierKernelEstimator(image_head=True).image_head
    assert count(head) == 1299 and head.kernel_size == (3, 3)


@pytest.mark.parametrize('later', [False, True])
@pytest.mark.parametrize('head', [False, True])
def test_official_renames_cover_every_parameter(later, head):
    m = FourierKernelEstimator(first_column=not later, image_head=head)
    assert rename(m.state_dict()) == official(later, head)
    assert rename(m.state_dict(), fke_official_renames(4)) == official(later, head)
    # both ways: every official name maps back to exactly one of ours
    back = {theirs: ours for ours, theirs in FKE_OFFICIAL_RENAMES}
    assert len(back) == len(FKE_OFFICIAL_RENAMES)


def test_official_renames_against_key_files():
    keys = KEYS_DIR

    def load(name, prefix):
        rows = [line.split('\t') for line in (keys / name).read_text().splitlines() if line.strip()]
        return parse_keys('\n'.join(f'{k[len(prefix):]} {s}' for k, s in rows if k.startswith(prefix)))

    b = 'deeprftv2_B_official_keys.txt'
    for i in (0, 1):
        ours = rename(FourierKernelEstimator(first_column=i == 0, image_head=True).state_dict())
        assert ours == load(b, f'global_model.kernel_estimator.{i}.')
        assert ours == load(b, f'global_model.mid_kernel_estimator.{i}.')
        assert ours == load('deeprftv2_S_official_keys.txt', f'global_model.kernel_estimator.{i}.')
    atd = 'atd_light_fke_x2_official_keys.txt'
    assert rename(FourierKernelEstimator(pad_to_even=True).state_dict()) == load(atd, 'ker_ests.0.')
    for i in (1, 2, 3):
        later = rename(FourierKernelEstimator(first_column=False, pad_to_even=True).state_dict())
        assert later == load(atd, f'ker_ests.{i}.')


def test_initial_values():
    m = FourierKernelEstimator(first_column=False)
    assert all(torch.equal(a, torch.full((1, 48, 1, 1), 0.5)) for a in m.column.alphas)
    assert m.proj_kernel.bias is None and m.proj_feature.bias is None and m.spectral_embed.bias is None
    assert m.fuse.bias is None and m.otf_head.proj.bias is not None
    assert all(lvl.fusion.bias is not None for lvl in m.column.levels[:3]) and m.column.levels[3].fusion is None
    assert all(lvl.fusion is None for lvl in FourierKernelEstimator().column.levels)


# ------------------------------------------------------------------------------------------ numerics
def test_first_column_matches_reference():
    m = make(image_head=True)
    feat, blur = torch.randn(2, 8, 6, 8), torch.randn(2, 3, 6, 8)
    out = m(feat, blur=blur)
    assert isinstance(out, FKEOutput)
    ref, ref_states, ref_img = fke_ref(m, feat, blur=blur)
    torch.testing.assert_close(out.feature, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.image, ref_img, rtol=1e-4, atol=1e-5)
    assert len(out.state) == 4
    for s, r in zip(out.state, ref_states):
        assert s.shape == (2, 8, 6, 5)
        torch.testing.assert_close(s, r, rtol=1e-4, atol=1e-5)


def test_state_chaining_matches_reference():
    m0, m1 = make(0), make(1, first_column=False)
    feat0, feat1 = torch.randn(1, 8, 8, 6), torch.randn(1, 8, 8, 6)
    out0 = m0(feat0)
    out1 = m1(feat1, state=out0.state)
    ref, ref_states, _ = fke_ref(m1, feat1, state=out0.state)
    torch.testing.assert_close(out1.feature, ref, rtol=1e-4, atol=1e-5)
    for s, r in zip(out1.state, ref_states):
        torch.testing.assert_close(s, r, rtol=1e-4, atol=1e-5)
    # the previous state matters: another state gives another output
    other = m1(feat1, state=tuple(torch.randn_like(s) for s in out0.state))
    assert not torch.allclose(other.feature, out1.feature, atol=1e-4)
    with pytest.raises(ValueError, match='needs the previous'):
        m1(feat1)
    with pytest.raises(ValueError, match='first-column FKE takes no previous state'):
        m0(feat0, state=out0.state)
    with pytest.raises(ValueError, match=r'state\[0\]: shape'):
        m1(torch.randn(1, 8, 8, 8), state=out0.state)


def test_pad_to_even_odd_sizes_match_reference():
    m = make(2, pad_to_even=True, first_column=False)
    feat = torch.randn(1, 8, 7, 9)
    state = tuple(torch.randn(1, 8, 8, 6) for _ in range(4))  # spectral grid of the padded 8×10 map
    out = m(feat, state=state)
    assert out.feature.shape == feat.shape and all(s.shape == (1, 8, 8, 6) for s in out.state)
    ref, _, _ = fke_ref(m, feat, state=state)
    torch.testing.assert_close(out.feature, ref, rtol=1e-4, atol=1e-5)


def test_odd_width_needs_pad_to_even():
    m = make()
    assert m(torch.randn(1, 8, 7, 8)).feature.shape == (1, 8, 7, 8)  # odd height is fine (irfft2 keeps H)
    with pytest.raises(ValueError, match='odd'):
        m(torch.randn(1, 8, 8, 7))


def test_full_size_shapes():
    torch.manual_seed(0)
    f0 = FourierKernelEstimator(image_head=True)
    f1 = FourierKernelEstimator(first_column=False, image_head=True)
    feat, blur = torch.randn(1, 48, 16, 16), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        o0 = f0(feat, blur=blur)
        o1 = f1(feat, o0.state, blur)
    assert o1.feature.shape == (1, 48, 16, 16) and o1.image.shape == (1, 3, 16, 16)
    assert [tuple(s.shape) for s in o1.state] == [(1, 48, 16, 9)] * 4
    atd = FourierKernelEstimator(pad_to_even=True)
    with torch.no_grad():
        o = atd(torch.randn(1, 48, 15, 13))
    assert o.feature.shape == (1, 48, 15, 13) and o.image is None
    assert [tuple(s.shape) for s in o.state] == [(1, 48, 16, 8)] * 4
    with pytest.raises(ValueError, match='blur must be'):
        f0(feat)
    with pytest.raises(ValueError, match='feat must be'):
        f0(torch.randn(1, 8, 32, 32), blur=blur)


@pytest.mark.parametrize('first', [True, False])
def test_reversible_equals_plain(first):
    plain = make(3, first_column=first, image_head=True)
    rev = make(3, first_column=first, image_head=True, save_memory=True)
    rev.load_state_dict(plain.state_dict())
    assert rev.save_memory and not plain.save_memory
    feat, blur = torch.randn(1, 8, 8, 8), torch.randn(1, 3, 8, 8)
    state = None if first else tuple(torch.randn(1, 8, 8, 5) for _ in range(4))
    results = []
    for m in (plain, rev):
        f = feat.clone().requires_grad_()
        st = None if first else tuple(s.clone().requires_grad_() for s in state)
        out = m(f, st, blur)
        loss = out.image.square().sum() + sum((s * torch.cos(s)).sum() for s in out.state)
        loss.backward()
        grads = [f.grad] + ([] if first else [s.grad for s in st]) + [p.grad for p in m.parameters()]
        results.append(([out.feature, out.image, *out.state], grads))
    for a, b in zip(results[1][0], results[0][0]):
        assert rel_err(a.detach(), b.detach()) <= 1e-5
    names = ['feat'] + ([] if first else [f'state{j}' for j in range(4)]) + [n for n, _ in plain.named_parameters()]
    for name, a, b in zip(names, results[1][1], results[0][1]):
        if b is None:  # first column: the α scales get no gradient on either path
            assert a is None or a.abs().max() == 0, name
            continue
        assert rel_err(a, b) <= 1e-5, name


def test_image_head_is_residual_on_blur():
    m = make(4, image_head=True)
    feat, blur = torch.randn(1, 8, 6, 6), torch.randn(1, 3, 6, 6)
    out = m(feat, blur=blur)
    torch.testing.assert_close(out.image - blur, m.image_head(out.feature))


def test_autocast_bf16_cpu():
    m = make(5, image_head=True)
    feat, blur = torch.randn(1, 8, 8, 8), torch.randn(1, 3, 8, 8)
    ref = m(feat, blur=blur)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = m(feat, blur=blur)
    assert torch.isfinite(out.feature.float()).all() and torch.isfinite(out.image.float()).all()
    assert rel_err(out.image.float(), ref.image) < 0.05


def test_scan_backends_agree():
    m = make(6, first_column=False)
    feat, state = torch.randn(1, 8, 6, 8), tuple(torch.randn(1, 8, 6, 5) for _ in range(4))
    a = m(feat, state).feature
    b = set_scan_backend(m, 'ref')(feat, state).feature
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_registry_builds_from_options():
    import fke_basicsr  # noqa: F401  (registration)
    from basicsr.archs import build_network
    net = build_network({'type': 'FourierKernelEstimator', 'in_channels': 16, 'width': 8, 'first_column': False,
                         'image_head': True, 'window': [64, 64], 'window_overlap': 16})
    assert isinstance(net, FourierKernelEstimator)
    assert net.window == (64, 64) and net.window_overlap == (16, 16) and not net.first_column
    assert net.fuse.in_channels == 24 and net.fuse.out_channels == 16


# ------------------------------------------------------------------------------------------ FKE tiling
def test_training_tiling_is_window_partition():
    m0, m1 = make(7, window=4), make(8, window=4, first_column=False)
    m0.train(), m1.train()
    feat0, feat1 = torch.randn(2, 8, 6, 8), torch.randn(2, 8, 6, 8)  # rows 0, 2 (snapped); cols 0, 4
    out0 = m0(feat0)
    assert [tuple(s.shape) for s in out0.state] == [(2 * 4, 8, 4, 3)] * 4   # per window, window-major
    ref0, ref_state0 = windowed_ref(m0, feat0, 4)
    torch.testing.assert_close(out0.feature, ref0, rtol=1e-4, atol=1e-5)
    for s, r in zip(out0.state, ref_state0):
        torch.testing.assert_close(s, r, rtol=1e-4, atol=1e-5)
    out1 = m1(feat1, out0.state)  # the chained FKE tiles identically and takes the per-window state
    ref1, _ = windowed_ref(m1, feat1, 4, state=out0.state)
    torch.testing.assert_close(out1.feature, ref1, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out0.feature, fke_ref(m0, feat0)[0], atol=1e-4)  # tiling changes the function
    # in eval without overlap the same partition is used
    m0.eval()
    torch.testing.assert_close(m0(feat0).feature, ref0, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('training', [True, False])
def test_window_at_least_map_size_does_not_tile(training):
    tiled, plain = make(9, window=8, window_overlap=2), make(9)
    tiled.train(training), plain.train(training)
    feat = torch.randn(1, 8, 8, 6)
    out = tiled(feat)
    torch.testing.assert_close(out.feature, plain(feat).feature)
    assert out.state[0].shape == (1, 8, 8, 4)


def test_eval_tiling_is_blended_overlapping_tiles():
    from fke_basicsr.ops.geometry import TileGrid
    m = make(10, window=6, window_overlap=2)
    m.eval()
    feat = torch.randn(1, 8, 10, 8)
    with torch.no_grad():
        out = m(feat)
        grid = TileGrid((10, 8), 6, 2)  # rows 0, 4 (snapped); cols 0, 2 (snapped): 4 overlapping tiles
        assert grid.rows == [0, 4] and grid.cols == [0, 2]
        a, b = F.conv2d(feat, m.proj_kernel.weight), F.conv2d(feat, m.proj_feature.weight)
        pieces, states = [], []
        for top, left, th, tw in grid.boxes():
            f, rs = spectral_ref(m, a[..., top:top + th, left:left + tw], b[..., top:top + th, left:left + tw])
            pieces.append(f)
            states.append(rs)
        # blended merge: tile-major weights that sum to one everywhere
        weights = torch.zeros(10, 8)
        for k, (top, left, th, tw) in enumerate(grid.boxes()):
            weights[top:top + th, left:left + tw] += grid.weight(k)
        torch.testing.assert_close(weights, torch.ones(10, 8))
        ref, _ = head_ref(m, grid.merge(torch.cat(pieces)), feat)
        torch.testing.assert_close(out.feature, ref, rtol=1e-4, atol=1e-5)
        assert out.state[0].shape == (4, 8, 6, 4)
        torch.testing.assert_close(out.state[3], torch.cat([s[3] for s in states]), rtol=1e-4, atol=1e-5)
        # blended (eval) differs from the partition used in training
        m.train()
        assert not torch.allclose(m(feat).feature, out.feature, atol=1e-4)
