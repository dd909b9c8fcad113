"""fke_basicsr.kernel_metrics: OTF agreement and CKA against the true kernel, hand-checked and at the extremes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import fke_basicsr  # noqa: F401
from fke_basicsr import kernel_metrics as km
from fke_basicsr.kernels import FKECapture

REPO = Path(__file__).resolve().parents[1]


def _line(length: int = 9, size: int = 11) -> np.ndarray:
    k = np.zeros((size, size))
    k[size // 2, size // 2 - length // 2:size // 2 + length // 2 + 1] = 1
    return k / k.sum()


def test_kernel_otf_hand_checked():
    np.testing.assert_allclose(km.kernel_otf(np.ones((1, 1)), (4, 4)).numpy(), np.ones((4, 3)))
    # two taps [0.5, 0.5], centre pixel (index 1) at the origin, the other tap at x = -1:
    # OTF(u) = 0.5 + 0.5·exp(+2πi·u/4) → 1, 0.5 + 0.5i, 0 along the first row
    otf = km.kernel_otf(np.array([[0.5, 0.5]]), (4, 4))
    np.testing.assert_allclose(otf[0].numpy(), [1, 0.5 + 0.5j, 0], atol=1e-12)
    np.testing.assert_allclose(otf[1].numpy(), otf[0].numpy(), atol=1e-12)  # no vertical extent
    mask = km.attenuated_mask(otf, 0.9)
    assert mask[0].tolist() == [False, True, True]  # DC excluded; |0.5+0.5i| = 0.707 < 0.9; 0 < 0.9
    with pytest.raises(ValueError, match='does not fit'):
        km.kernel_otf(np.ones((5, 5)), (4, 4))


def test_otf_agreement_extremes_and_a_small_case():
    otf = km.kernel_otf(_line(), (32, 32))
    # the true OTF, scaled and sign-flipped, scores 1 on both (scale / constant phase offset are free)
    for est in (otf, -3 * otf, (0.5j) * otf):
        s = km.otf_agreement(est, otf)
        assert s['otf_mag'] == pytest.approx(1, abs=1e-9) and s['otf_phase'] == pytest.approx(1, abs=1e-9)
    g = torch.Generator().manual_seed(0)
    rand = torch.complex(torch.randn(8, 32, 17, generator=g, dtype=torch.float64),
                         torch.randn(8, 32, 17, generator=g, dtype=torch.float64))
    s = km.otf_agreement(rand, otf)
    assert abs(s['otf_mag_mean']) < 0.1 and s['otf_phase_mean'] < 0.15
    # best channel: one true channel among random ones is found
    mixed = torch.cat([rand, otf[None]], 0)
    assert km.otf_agreement(mixed, otf)['otf_mag'] == pytest.approx(1, abs=1e-9)
    # hand-checked: 3 attenuated frequencies, magnitudes (1, 2, 3) vs (2, 4, 7) → Pearson 0.99339...
    t = torch.tensor([[1.0, 0.2, 0.4, 0.6]], dtype=torch.complex128)   # DC 1 (excluded), then |OTF| 0.2, 0.4, 0.6
    e = torch.tensor([[5.0, 2.0, -4.0, 7.0j]], dtype=torch.complex128)
    s = km.otf_agreement(e, t)
    assert s['otf_mag'] == pytest.approx(np.corrcoef([2, 4, 7], [0.2, 0.4, 0.6])[0, 1], abs=1e-12)
    # phases of e/t: 0, π, π/2 weighted by |t| 0.2, 0.4, 0.6 → |0.2 − 0.4 + 0.6i| / 1.2
    assert s['otf_phase'] == pytest.approx(abs(0.2 - 0.4 + 0.6j) / 1.2, abs=1e-12)


def test_a_centred_blob_does_not_score_like_the_kernel():
    """The structure problem of a spatial correlation: a Gaussian blob is compact, but not this motion kernel."""
    yy, xx = np.mgrid[-5:6, -5:6]
    blob = np.exp(-(xx ** 2 + yy ** 2) / 4.0)
    blob /= blob.sum()
    otf = km.kernel_otf(_line(), (32, 32))
    s = km.otf_agreement(km.kernel_otf(blob, (32, 32)), otf)
    assert s['otf_mag'] < 0.6


def test_cka_to_otf_extremes():
    otf = km.kernel_otf(_line(), (16, 16))
    feat = torch.stack([otf.real, otf.imag])[None].float()              # r = [Re, Im] of the OTF: CKA 1
    cap = FKECapture('fke', torch.zeros(1), torch.zeros(1), [feat, 2 * feat])
    s = km.cka_to_otf(cap, otf)
    assert s['cka_r0'] == pytest.approx(1, abs=1e-6) and s['cka_rL'] == pytest.approx(1, abs=1e-6)
    noise = torch.randn(1, 8, 16, 9, generator=torch.Generator().manual_seed(1))
    assert km.cka_to_otf(FKECapture('fke', torch.zeros(1), torch.zeros(1), [noise]), otf)['cka_r0'] < 0.3


def _shake_val(tmp_path: Path) -> tuple[Path, np.ndarray]:
    spec = importlib.util.spec_from_file_location('make_demo_dataset', REPO / 'scripts' / 'make_demo_dataset.py')
    mdd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mdd)
    rng = np.random.default_rng(3)
    out = tmp_path / 'val'
    mdd.write_split(str(out), ('coffee',), (64, 96), 48, None, 1, True, rng, 'shake')
    return out, np.load(out / 'kernels' / '0000.npy')


def _demo_net() -> torch.nn.Module:
    from fke_basicsr.archs.deeprftv2_arch import DeepRFTv2
    torch.manual_seed(0)
    return DeepRFTv2(variant='S', num_columns=1, width=8, enc_blocks=[1, 1, 1], dec_blocks=[1, 1, 1], fke_width=8,
                     fke_levels=1)


def test_an_fke_set_to_the_true_otf_scores_at_the_ceiling_a_random_one_at_baseline(tmp_path):
    from fke_basicsr.kernels import _half_kernel
    val, kernel = _shake_val(tmp_path)
    net = _demo_net()
    untrained = km.kernel_agreement(net, val)
    full_h = 64

    def set_true_otf(module, inputs, out):
        h, wf = out.shape[-2:]
        k = kernel if h >= full_h else _half_kernel(kernel)
        otf = km.kernel_otf(k, (h, 2 * (wf - 1))).to(out.dtype)
        return otf.expand_as(out).clone()

    handles = [m.otf_head.register_forward_hook(set_true_otf) for m in (net.fke_max[0], net.fke_mid[0])]
    oracle = km.kernel_agreement(net, val)
    for h in handles:
        h.remove()
    assert set(oracle['fke']) == {'fke_max.0', 'fke_mid.0'}
    for key in ('otf_mag', 'otf_phase'):
        assert oracle['all_fkes'][key] == pytest.approx(1, abs=1e-4)
        assert oracle['all_fkes'][key] >= oracle['division'][key]            # at (above) the division ceiling
        assert untrained['all_fkes'][key] < 0.5                              # an untrained FKE: far below
        assert untrained['all_fkes'][key] < oracle['division'][key]
    assert 0.3 < oracle['division']['otf_mag'] <= 1                         # the division recovers the kernel


def test_visualize_kernels_prints_the_agreement_with_baseline_and_ceiling(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('visualize_kernels', REPO / 'scripts' / 'visualize_kernels.py')
    vk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vk)
    val, _ = _shake_val(tmp_path)
    sets = ['--set', 'num_columns=1', '--set', 'width=8', '--set', 'enc_blocks=[1,1,1]', '--set',
            'dec_blocks=[1,1,1]', '--set', 'fke_width=8', '--set', 'fke_levels=1']
    assert vk.main(['--arch', 'DeepRFTv2', '--variant', 'S', *sets, '-o', str(tmp_path / 'o'), '--demo-root',
                    str(val), '--threads', '1']) == 0
    text = capsys.readouterr().out
    assert 'untrained' in text and 'ceiling' in text and 'identity' in text and 'otf_phase' in text
    import json
    agree = json.loads((tmp_path / 'o' / 'kernel_agreement.json').read_text())
    assert agree['model']['division'] == agree['untrained']['division']   # the ceiling depends on the data only
    assert set(agree['model']['fke']) == {'fke_max.0', 'fke_mid.0'}


def test_identity_filter_scores_hand_checked():
    k = _line(5, 7)
    otf = km.kernel_otf(k, (16, 16))
    mask = km.attenuated_mask(otf, 0.9)
    t = otf[mask]
    s = km.identity_scores(k, (16, 16), 16)
    assert s['otf_phase'] == pytest.approx(float(t.conj().sum().abs() / t.abs().sum()), abs=1e-12)
    assert s['otf_mag'] == 0 and s['cka_r0'] == 0 == s['cka_rL']
    assert km.otf_agreement(otf, otf)['otf_phase'] > s['otf_phase']   # the true OTF beats a pass-through
