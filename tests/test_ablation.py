"""Ablation study (paper §5, Tables 6/7): row table, generated options, FLOPs column, variant modules."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import fke_basicsr  # noqa: F401  (shims + registration before basicsr)
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

from fke_basicsr import ablation
from fke_basicsr.archs.ablation_variants import AblationFKE, DeepRFTv2Ablation
from fke_basicsr.archs.deeprftv2_arch import VARIANTS, DeepRFTv2
from fke_basicsr.archs.outputs import DeblurOutputs, prediction

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'scripts'))
import make_ablation_options  # noqa: E402

torch.set_num_threads(1)  # 2 threads are far slower on a shared 2-core machine (OpenMP spinning)
OPTIONS = sorted((ROOT / 'options' / 'train' / 'Ablation').glob('*.yml'))


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------------------------ row table / files
def test_row_table_covers_both_tables():
    assert [r.row for r in ablation.TABLE6] == list(range(1, 20))
    assert [r.row for r in ablation.TABLE7] == list(range(1, 11))
    assert len({r.stem for r in ablation.TABLE6 + ablation.TABLE7}) == 29
    # the numbers stated in the text of paper §5
    assert ablation.row('T6-03').psnr == 33.32 and ablation.row('T6-14').gflops == 75.34
    assert ablation.row('T7-08').psnr == 33.06 and ablation.row('T7-02').psnr == 32.72
    with pytest.raises(ValueError, match='key'):
        ablation.row('T6-99')


def test_generator_output_equals_committed_files():
    files = make_ablation_options.expected_files()
    assert sorted(files) == [p.name for p in OPTIONS]
    for p in OPTIONS:
        assert p.read_text(encoding='utf-8') == files[p.name], f'{p.name} drifted: run make_ablation_options.py'
    assert make_ablation_options.main(['--check']) == 0


def test_options_files_carry_recipe_and_paper_values():
    for r in ablation.TABLE6 + ablation.TABLE7:
        text = (ROOT / 'options' / 'train' / 'Ablation' / f'{r.stem}.yml').read_text(encoding='utf-8')
        opt = yaml.safe_load(text)
        assert opt['model_type'] == 'DeblurModel' and opt['model_type'] in MODEL_REGISTRY
        assert opt['network_g']['type'] in ARCH_REGISTRY
        assert opt['train']['total_iter'] == 200000
        assert opt['train']['progressive'] == [{'iters': 200000, 'gt_size': 256, 'batch': 16}]
        assert opt['datasets']['train']['gt_size'] == 256
        assert opt['datasets']['train']['dataroot_gt'].startswith('datasets/GoPro/train')
        if r.psnr is not None:
            assert f'{r.psnr:.2f} dB' in text.splitlines()[0]
        if r.gflops is not None:
            assert f'{r.gflops:g} GFLOPs' in text.splitlines()[0]


@pytest.mark.parametrize('path', OPTIONS, ids=[p.stem for p in OPTIONS])
def test_every_options_file_builds_and_trains_one_step(path):
    net_opt = yaml.safe_load(path.read_text(encoding='utf-8'))['network_g']
    torch.manual_seed(0)
    net = build_network(copy.deepcopy(net_opt))
    net.train()
    x = torch.rand(1, 3, 32, 32)
    out = net(x)
    assert isinstance(out, DeblurOutputs)
    full, half = out.full, out.half
    assert full and all(o.shape == x.shape for o in full)
    assert all(o.shape[-2:] == (16, 16) for o in half)
    loss = sum(o.abs().mean() for o in full + half)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    net.eval()
    with torch.no_grad():
        assert prediction(net(x)).shape == x.shape


# ------------------------------------------------------------------------------------------------ FLOPs column
@pytest.mark.parametrize('key', ['T6-03', 'T6-14', 'T6-15'])
def test_table6_macs_of_certain_rows_within_3_percent(key):
    r = ablation.row(key)
    macs = ablation.row_macs(r, 256, extrapolate_from=(32, 64))
    assert abs(macs['ptflops'] / 1e9 - r.gflops) / r.gflops < 0.03
    if key == 'T6-14':   # the counts of the authors' -S: ptflops 75.33 G, conv+linear 74.35 G
        assert macs['ptflops'] / 1e9 == pytest.approx(75.33, rel=2e-3)
        assert macs['conv_linear'] / 1e9 == pytest.approx(74.35, rel=2e-3)


def test_print_table6_macs_against_paper(capsys):
    sys.path.insert(0, str(ROOT / 'scripts'))
    import check_ablation_flops

    report = check_ablation_flops.rows_report(6, fast=True, size=64)
    # counted at 16/32, extrapolated to 64, scaled to 256 (all terms but the per-image SCA scale with H·W)
    for d in report:
        d['ptflops'] *= 16
        d['conv_linear'] *= 16
        d['diff_pct'] = 100.0 * (d['ptflops'] - d['paper']) / d['paper']
    with capsys.disabled():
        print('\n' + check_ablation_flops.format_report(report))
    assert len(report) == 15
    assert all(abs(d['diff_pct']) < 3.0 for d in report), [(d['key'], d['diff_pct']) for d in report]


# ------------------------------------------------------------------------------------------------ -S / -B untouched
@pytest.mark.parametrize('variant,params', [('S', 21_191_096), ('B', 30_117_560)])
def test_ablation_subclass_with_defaults_is_deeprftv2(variant, params):
    torch.manual_seed(0)
    ref = DeepRFTv2(variant=variant).eval()
    torch.manual_seed(0)
    sub = DeepRFTv2Ablation(variant=variant).eval()
    assert _params(ref) == _params(sub) == params
    ref_sd, sub_sd = ref.state_dict(), sub.state_dict()
    assert list(ref_sd) == list(sub_sd)
    assert all(torch.equal(ref_sd[k], sub_sd[k]) for k in ref_sd)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ref(x), sub(x)
    assert all(torch.equal(p, q) for p, q in zip(a.full + a.half, b.full + b.half)) and b.quarter == []


def test_building_every_row_leaves_the_presets_alone():
    before = copy.deepcopy(VARIANTS)
    for r in ablation.TABLE7:
        build_network(ablation.network_options(r))
    assert VARIANTS == before
    assert _params(DeepRFTv2(variant='S')) == 21_191_096


# ------------------------------------------------------------------------------------------------ parameter equalities
def _row_params(key: str) -> int:
    return _params(build_network(ablation.network_options(ablation.row(key))))


def test_table7_variants_parameters():
    base = _row_params('T7-08')   # Fourier, ReLU, input d1 (ResBlock FKE on the One-Scale UNet)
    w = 48
    # same estimator, other activation / combination / input feature: same parameters
    assert _row_params('T7-03') == _row_params('T7-07') == _row_params('T7-06') == base
    # image inputs: the kernel projection takes 3 instead of 48 channels
    assert _row_params('T7-04') == _row_params('T7-05') == base - (w - 3) * w
    # spatial: [Re, Im] embedding 2w->w becomes w->w; the head predicts w real instead of 2w (Re, Im) maps
    assert _row_params('T7-02') == base - w * w - (w * w + w)
    # no skip: the three 1x1 (2w->w, bias) fusions of each second-column FKE (max and mid scale) are gone
    assert _row_params('T7-09') == _row_params('T7-10') - 2 * 3 * (2 * w * w + w)


def test_mimo_adds_exactly_its_embeddings_fusions_and_heads():
    c = 56
    chans = [c, 2 * c, 4 * c]
    extra = sum(27 * ch for ch in chans) + sum(2 * ch * ch + ch for ch in chans) + sum(9 * ch * 3 + 3 for ch in chans[1:])
    assert _row_params('T6-02') == _row_params('T6-01') + extra


# ------------------------------------------------------------------------------------------------ variant modules
def test_spatial_fke_is_a_circular_convolution_with_the_estimated_kernel():
    torch.manual_seed(0)
    fke = AblationFKE(in_channels=2, width=2, levels=1, block='ResBlock', domain='spatial').eval()
    h, w = 4, 6
    kmap, fmap = torch.randn(1, 2, h, w), torch.randn(1, 2, h, w)
    with torch.no_grad():
        out, _ = fke.filter_spectrum(kmap, fmap, None)
        r = fke.column(fke.spectral_embed(kmap))[-1]
        k = fke.otf_head.proj(fke.otf_head.norm(r)).numpy()[0]
    f = fmap.numpy()[0]
    ref = np.zeros_like(f)
    for ch in range(2):
        for y in range(h):
            for x in range(w):
                ref[ch, y, x] = sum(f[ch, (y - u) % h, (x - v) % w] * k[ch, u, v] for u in range(h) for v in range(w))
    np.testing.assert_allclose(out.numpy()[0], ref, rtol=1e-4, atol=1e-5)


def test_add_fke_adds_the_kernel_spectrum():
    torch.manual_seed(0)
    fke = AblationFKE(in_channels=2, width=2, levels=1, block='ResBlock', combine='add').eval()
    kmap, fmap = torch.randn(1, 2, 4, 6), torch.randn(1, 2, 4, 6)
    with torch.no_grad():
        out, _ = fke.filter_spectrum(kmap, fmap, None)
        spec = torch.fft.rfft2(kmap)
        r = fke.column(fke.spectral_embed(torch.cat([spec.real, spec.imag], 1)))[-1]
        otf = fke.otf_head(r)
    ref = np.fft.irfft2(np.fft.rfft2(fmap.numpy()) + otf.numpy(), s=(4, 6))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_no_activation_and_no_skip_variants():
    fke = AblationFKE(in_channels=4, width=4, levels=2, block='ResBlock', act=False)
    assert not any(isinstance(m, torch.nn.ReLU) for m in fke.modules())
    with pytest.raises(ValueError, match='act'):
        AblationFKE(in_channels=4, width=4, levels=2, block='naf', act=False)
    first = AblationFKE(in_channels=4, width=4, levels=3, block='ResBlock')
    second = AblationFKE(in_channels=4, width=4, levels=3, block='ResBlock', first_column=False, cross_skip=False)
    assert all(level.fusion is None for level in second.column.levels)
    feat = torch.randn(1, 4, 8, 8)
    out = second(feat, state=first(feat).state)
    assert out.feature.shape == feat.shape
    assert AblationFKE(in_channels=4, width=4, block='ResBlock', combine='add').combine == 'add'


def test_fke_inputs_reach_the_estimator():
    torch.manual_seed(0)
    net = DeepRFTv2Ablation(variant=None, num_columns=1, mid_scale=False, fke_block='ResBlock', fke_input='S').eval()
    seen = {}
    net.head_max[0].register_forward_hook(lambda m, i, o: seen.__setitem__('head', o))
    net.fke_max[0].register_forward_pre_hook(lambda m, a, k: seen.__setitem__('src', k['source']), with_kwargs=True)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        net(x)
    torch.testing.assert_close(seen['src'], seen['head'] + x)


def test_mimo_outputs_and_bad_options():
    net = DeepRFTv2Ablation(variant=None, num_columns=1, width=8, mid_scale=False, fke=False, mimo=True).train()
    out = net(torch.rand(2, 3, 32, 32))
    assert [o.shape[-1] for o in out.full] == [32] and [o.shape[-1] for o in out.half] == [16]
    assert [o.shape[-1] for o in out.quarter] == [8]
    with pytest.raises(ValueError, match='mimo'):
        DeepRFTv2Ablation(variant='S', mimo=True)
    with pytest.raises(ValueError, match='domain'):
        DeepRFTv2Ablation(variant='S', fke_domain='wavelet')
    with pytest.raises(ValueError, match='kernel_input'):
        DeepRFTv2Ablation(variant='S', fke_input='d2')
    with pytest.raises(ValueError, match='fke'):
        DeepRFTv2Ablation(variant='S', fke=False, fke_combine='add')


def test_paper_values_agree_between_the_row_table_and_eval_protocols():
    """reproduce_tables prints eval_protocols' values; the ablation options headers print ablation.py's."""
    from fke_basicsr import eval_protocols as ep
    for r in ablation.TABLE7:
        assert ep.TABLE7_ROWS[f'row{r.row:02d}'][1] == r.psnr, r.key
    for r in ablation.TABLE6:
        key = f'row{r.row:02d}'
        if key in ep.TABLE6_ROWS:
            assert ep.TABLE6_ROWS[key][1] == r.psnr, r.key
