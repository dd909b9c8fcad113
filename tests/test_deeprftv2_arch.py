"""DeepRFTv2 arch: exact sizes, one output type in training and eval, input checks, reversible == plain.
(Test-time padding and tiling: tests/test_protocol.py.)"""
from __future__ import annotations

import time

import pytest
import torch

import fke_basicsr  # noqa: F401  (shims + registration)
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from fke_basicsr.archs.deeprftv2_arch import DeepRFTv2
from fke_basicsr.archs.outputs import DeblurOutputs, levels, prediction
from fke_basicsr.ops.pyramid import gaussian_pyramid

# A reduced -S (same wiring, fewer/narrower blocks) keeps the CPU tests fast.
SMALL = dict(variant='S', width=16, enc_blocks=[1, 1, 2], dec_blocks=[2, 1, 1], fke_width=16)


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    # one thread is several times faster than two on a shared 2-core machine for these small tensors
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def small(**kw) -> DeepRFTv2:
    torch.manual_seed(0)
    return DeepRFTv2(**{**SMALL, **kw})


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def perturb_(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Move the zero-initialised scales (beta, gamma, lamb_g) off zero so every branch reaches the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


# ---------------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize('variant, total, max_encoder, max_decoder', [
    ('B', 30_117_560, 4_727_616, 4_727_472),
    ('S', 21_191_096, 2_496_000, 2_495_856),
])
def test_parameter_counts_match_the_spec_breakdown(variant, total, max_encoder, max_decoder):
    """docs/architecture.md, Parameters and MACs, part by part (per column), and the exact totals."""
    net = DeepRFTv2(variant=variant)
    assert n_params(net) == total
    for i in range(2):
        assert n_params(net.encoders_max[i]) == max_encoder
        assert n_params(net.decoders_max[i]) == max_decoder
        assert n_params(net.encoders_mid[i]) == 2_593_104
        assert n_params(net.decoders_mid[i]) == 2_495_856
        assert n_params(net.max_to_mid[i]) == 193_536
        assert n_params(net.latent_fuse[i]) == 110_784
        assert n_params(net.head_max[i]) + n_params(net.head_mid[i]) == 2_598
    assert [n_params(m) for m in net.fke_max] == [93_299, 107_267]
    assert [n_params(m) for m in net.fke_mid] == [93_299, 107_267]
    embed = [n_params(net.embed_max[i]) + n_params(net.embed_mid[i]) + n_params(net.feedback_max[i])
             + n_params(net.feedback_mid[i]) for i in range(2)]
    assert embed == [2_592, 11_904]


def test_builds_from_yaml_options_via_the_registry():
    assert ARCH_REGISTRY.get('DeepRFTv2') is DeepRFTv2
    net = build_network({'type': 'DeepRFTv2', 'variant': 'S', 'width': 16, 'enc_blocks': [1, 1, 2],
                         'dec_blocks': [2, 1, 1], 'save_memory_encoder': [False, True],
                         'save_memory_decoder': [True, True, True, True], 'save_memory_fke': True})
    assert isinstance(net, DeepRFTv2) and net.size_multiple == 8 == DeepRFTv2.size_multiple
    assert [e.save_memory for e in net.encoders_max] == [False, True]
    assert [e.save_memory for e in net.encoders_mid] == [False, True]
    assert [d.save_memory for d in net.decoders_mid] == [True, True]
    assert [f.save_memory for f in [*net.fke_max, *net.fke_mid]] == [True] * 4


def test_b_blocks_where_the_paper_puts_them():
    """-B: NAFEVS blocks in levels 1-2 of the max encoder and levels 0-1 of the max decoder, NAF elsewhere."""
    from fke_basicsr.archs.blocks import NAFBlock, NAFEVSBlock
    net = DeepRFTv2(variant='B', enc_blocks=[1, 2, 2], dec_blocks=[2, 2, 1])
    kinds = lambda coder: [{type(b) for b in lvl.blocks} for lvl in coder.levels]  # noqa: E731
    assert kinds(net.encoders_max[1]) == [{NAFBlock}, {NAFEVSBlock}, {NAFEVSBlock}]
    assert kinds(net.decoders_max[0]) == [{NAFEVSBlock}, {NAFEVSBlock}, {NAFBlock}]
    assert kinds(net.encoders_mid[0]) == kinds(net.decoders_mid[1]) == [{NAFBlock}] * 3


# ---------------------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize('size', [(64, 64), (64, 96)])
def test_training_forward_gives_4_full_and_4_half_outputs(size):
    net = perturb_(small()).train()
    x = torch.rand(1, 3, *size)
    out = net(x)
    assert isinstance(out, DeblurOutputs)
    h, w = size
    assert [tuple(t.shape) for t in out.full] == [(1, 3, h, w)] * 4
    assert [tuple(t.shape) for t in out.half] == [(1, 3, h // 2, w // 2)] * 4
    assert all(torch.isfinite(t).all() for t in [*out.full, *out.half])
    assert not torch.allclose(out.full[0], out.full[-1])


def test_outputs_are_heads_and_fke_images_in_spec_order():
    """full = [head col0, FKE col0, head col1, FKE col1] (docs/architecture.md): heads re-computed."""
    net = perturb_(small()).train()
    x = torch.rand(1, 3, 32, 32)
    captured = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: captured.append((mod, out)))
             for m in [*net.head_max, *net.fke_max]]
    out = net(x)
    for h in hooks:
        h.remove()
    order = [m for m, _ in captured]
    assert order == [net.head_max[0], net.fke_max[0], net.head_max[1], net.fke_max[1]]
    assert torch.equal(out.full[0], captured[0][1] + x)
    assert torch.equal(out.full[1], captured[1][1].image)
    assert torch.equal(out.full[3], captured[3][1].image)


def test_eval_returns_the_same_outputs_as_training():
    """One output type: DeblurOutputs in both modes; prediction() is the last full-resolution image."""
    net = perturb_(small())
    x = torch.rand(2, 3, 32, 48)
    net.train()
    with torch.no_grad():
        train_out = net(x)
    net.eval()
    with torch.no_grad():
        every = net(x)
    assert isinstance(every, DeblurOutputs) and isinstance(train_out, DeblurOutputs)
    pred = prediction(every)
    assert isinstance(pred, torch.Tensor) and pred.shape == (2, 3, 32, 48) and pred is every.prediction
    assert torch.equal(pred, train_out.full[-1])
    assert all(torch.equal(a, b) for a, b in zip(every.full + every.half, train_out.full + train_out.half))
    groups = levels(every)
    assert [len(g) for g in groups] == [4, 4] and groups[1][0].shape == (2, 3, 16, 24)
    assert levels(pred) == [[pred]] and prediction(pred) is pred
    with pytest.raises(ValueError, match='DeblurOutputs'):
        prediction([pred])


def test_batch_items_are_independent():
    net = perturb_(small()).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        both = prediction(net(x))
        single = torch.cat([prediction(net(x[:1])), prediction(net(x[1:]))])
    torch.testing.assert_close(both, single, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- sizes
def test_non_divisible_input_raises_and_names_the_protocol():
    net = perturb_(small()).eval()
    x = torch.rand(1, 3, 30, 45)
    with pytest.raises(ValueError, match=r'30x45.*multiple of 8.*TestTimeProtocol'):
        net(x)
    net.train()
    out = net(torch.rand(1, 3, 32, 48))
    assert [t.shape[-2:] for t in out.full] == [(32, 48)] * 4
    assert [t.shape[-2:] for t in out.half] == [(16, 24)] * 4


# ---------------------------------------------------------------------------------------------- reversible
@pytest.mark.parametrize('kw', [{}, dict(variant='B', enc_blocks=[1, 2, 2], dec_blocks=[2, 2, 1])],
                         ids=['S-small', 'B-small'])
def test_reversible_columns_equal_plain_autograd(kw):
    """All save_memory flags on vs off: same outputs and the same gradient for every parameter (<= 1e-5 rel.)."""
    net = perturb_(small(**kw))
    x = torch.rand(1, 3, 32, 32)

    def run(flag: bool):
        net.set_save_memory(encoder=flag, decoder=flag, fke=flag)
        net.zero_grad(set_to_none=True)
        out = net(x)
        loss = sum((t * w).sum() for w, t in enumerate([*out.full, *out.half], 1))
        loss.backward()
        # column 0 has no previous column: its carried-state alphas get no gradient (None) in both modes
        return [t.detach() for t in [*out.full, *out.half]], {n: p.grad for n, p in net.named_parameters()}

    out_plain, grad_plain = run(False)
    out_rev, grad_rev = run(True)
    for a, b in zip(out_plain, out_rev):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    unused = {n for n, g in grad_plain.items() if g is None}
    assert unused == {n for n, g in grad_rev.items() if g is None}
    assert all('.0.' in n and 'alphas' in n for n in unused) and len(unused) == 16
    for name, g in grad_plain.items():
        if g is None:
            continue
        scale = g.abs().max().clamp_min(1e-12)
        assert (grad_rev[name] - g).abs().max() <= 1e-5 * scale + 1e-7, name


def test_full_size_s_training_step_is_quick():
    """One full-size -S forward + backward on 64x64 well under a minute on CPU (all outputs supervised)."""
    torch.manual_seed(0)
    net = DeepRFTv2(variant='S', save_memory_encoder=[False, True], save_memory_decoder=[False, True],
                    save_memory_fke=True)
    x, gt = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    start = time.perf_counter()
    out = net(x)
    gt_half = gaussian_pyramid(gt, 2)[1]
    loss = sum((t - gt).abs().mean() for t in out.full) + sum((t - gt_half).abs().mean() for t in out.half)
    loss.backward()
    assert time.perf_counter() - start < 60
    assert torch.isfinite(loss)
    for name, p in net.named_parameters():
        if p.grad is None:  # only the first column's alphas of the (absent) previous column
            assert '.0.' in name and 'alphas' in name, name
        else:
            assert torch.isfinite(p.grad).all(), name


def test_b_full_size_forward_small_image():
    net = DeepRFTv2(variant='B').eval()
    with torch.no_grad():
        y = prediction(net(torch.rand(1, 3, 32, 32)))
    assert y.shape == (1, 3, 32, 32) and torch.isfinite(y).all()


# ---------------------------------------------------------------------------------------------- ablation options
def test_without_fke_the_decoder_feature_takes_its_place():
    net = perturb_(small(fke=False)).train()
    assert not hasattr(net, 'fke_max') and not hasattr(net, 'fke_mid')
    full_s = DeepRFTv2(variant='S', fke=False)
    assert n_params(full_s) == 21_191_096 - 2 * (93_299 + 107_267)  # exactly the four FKEs removed
    out = net(torch.rand(1, 3, 32, 32))
    assert len(out.full) == 2 and len(out.half) == 2
    net.eval()
    with torch.no_grad():
        x = torch.rand(1, 3, 32, 32)
        assert torch.equal(prediction(net(x)), net.train()(x).full[-1])


def test_single_scale_and_three_columns():
    net = small(mid_scale=False).train()
    assert net.size_multiple == 4 and not hasattr(net, 'encoders_mid')
    out = net(torch.rand(1, 3, 20, 28))
    assert len(out.full) == 4 and out.half == [] and out.full[0].shape == (1, 3, 20, 28)
    net3 = small(num_columns=3)
    out = net3(torch.rand(1, 3, 32, 32))
    assert len(out.full) == 6 and len(out.half) == 6


def test_block_kinds_per_part_and_local_blocks():
    net = small(max_enc_block_types=['ResBlock', 'VSBlock', 'naf'], mid_block_types='localnaf', train_size=64)
    from fke_basicsr.archs.blocks import LocalNAFBlock, ResBlock, VSBlock
    assert isinstance(net.encoders_max[0].levels[0].blocks[0], ResBlock)
    assert isinstance(net.encoders_max[0].levels[1].blocks[0], VSBlock)
    assert isinstance(net.encoders_mid[0].levels[2].blocks[0], LocalNAFBlock)
    out = net(torch.rand(1, 3, 32, 32))
    assert all(torch.isfinite(t).all() for t in out.full)


def test_fke_window_reaches_the_estimators_and_runs_in_train_and_eval():
    """DPDD-style FKE windows: max-scale FKEs get the window, mid-scale ones half of it."""
    net = perturb_(small(fke_window={'size': [16, 16], 'overlap': 8}))
    assert [f.window for f in net.fke_max] == [(16, 16)] * 2 and net.fke_max[0].window_overlap == (8, 8)
    assert [f.window for f in net.fke_mid] == [(8, 8)] * 2 and net.fke_mid[1].window_overlap == (4, 4)
    x = torch.rand(1, 3, 32, 48)
    out = net.train()(x)
    assert all(torch.isfinite(t).all() for t in [*out.full, *out.half])
    with torch.no_grad():
        windowed = prediction(net.eval()(x))
        for f in [*net.fke_max, *net.fke_mid]:
            f.window = None
        whole = prediction(net(x))
    assert windowed.shape == whole.shape and not torch.allclose(windowed, whole)


@pytest.mark.parametrize('kw, match', [
    (dict(variant='X'), 'variant'),
    (dict(enc_blocks=[1, 1], dec_blocks=[1, 1, 1]), 'enc_blocks / dec_blocks'),
    (dict(enc_blocks=[1, 0, 2]), 'enc_blocks'),
    (dict(max_enc_block_types=['naf', 'NAFEVSBlock', 'naf']), 'even number'),
    (dict(max_dec_block_types=['naf', 'nope', 'naf']), "unknown block 'nope'"),
    (dict(max_enc_block_types=['naf', 'naf']), 'expected 3 block names'),
    (dict(mid_block_types='localnaf'), 'train_size'),
    (dict(save_memory_encoder=[True]), 'save_memory_encoder'),
    (dict(fke_window=33), 'fke_window'),
    (dict(width=0), 'width'),
    (dict(fke_window=[16, 0]), 'fke_window'),
    (dict(fke_window={'size': 16, 'overlap': 3}), 'fke_window.overlap'),
    (dict(fke_window={'size': 16, 'overlap': 16}), 'fke_window'),
    (dict(fke_window={'window': 16}), 'fke_window'),
])
def test_bad_options_raise_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        small(**kw)


@pytest.mark.parametrize('levels', [2, 4])
def test_level_counts_other_than_three_fuse_the_mid_feature_at_the_latent_resolution(levels):
    net = DeepRFTv2(variant='S', width=4, enc_blocks=[1] * levels, dec_blocks=[1] * levels)
    x = torch.rand(1, 3, 2 ** levels * 4, 2 ** levels * 4)
    out = net(x)
    assert len(out.full) == 4 and out.full[-1].shape == x.shape
