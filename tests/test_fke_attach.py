"""FKEAttach around BasicSR's and our archs: shapes, training steps from YAML, checkpoints, freezing, errors."""
from __future__ import annotations

import pytest
import torch
import yaml

import fke_basicsr  # noqa: F401
from fke_basicsr.archs.outputs import prediction
from fke_basicsr.checkpoints import CheckpointMismatchError, load_checkpoint
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY

BASES = {
    'EDSR': 'base: {type: EDSR, num_in_ch: 3, num_out_ch: 3, num_feat: 16, num_block: 2, upscale: 2}',
    'RCAN': 'base: {type: RCAN, num_in_ch: 3, num_out_ch: 3, num_feat: 16, num_group: 2, num_block: 1, '
            'squeeze_factor: 4, upscale: 2}',
    'SwinIR': 'base: {type: SwinIR, upscale: 2, in_chans: 3, img_size: 16, window_size: 4, embed_dim: 12, '
              'depths: [1, 1], num_heads: [2, 2], mlp_ratio: 1, upsampler: pixelshuffledirect}',
    'RRDBNet': 'base: {type: RRDBNet, num_in_ch: 3, num_out_ch: 3, scale: 2, num_feat: 16, num_block: 1, '
               'num_grow_ch: 8}',
    'MSRResNet': 'base: {type: MSRResNet, num_in_ch: 3, num_out_ch: 3, num_feat: 16, num_block: 2, upscale: 2}',
    'ATD': 'base: {type: ATD, upscale: 2}',
    'DeepRFTv2': 'base: {type: DeepRFTv2, variant: S, width: 8, enc_blocks: [1, 1, 1], dec_blocks: [1, 1, 1]}\n'
                 'at: [decoders_max.1.levels.2]',
}
SCALE = {'ATD': 2, 'DeepRFTv2': 1}


def build(name: str, extra: str = ''):
    opt = yaml.safe_load(f'type: FKEAttach\n{BASES[name]}\nfke: {{width: 8, levels: 2}}\n{extra}')
    return build_network(opt), opt


@pytest.mark.parametrize('name', list(BASES))
def test_attach_builds_trains_and_keeps_output_shape(name):
    torch.manual_seed(0)
    net, opt = build(name)
    base = ARCH_REGISTRY.get(opt['base']['type'])(**{k: v for k, v in opt['base'].items() if k != 'type'})
    size = 16
    x = torch.rand(2, 3, size, size)
    net.eval(), base.eval()
    with torch.no_grad():
        assert prediction(net(x)).shape == prediction(base(x)).shape
    net.train()
    optim = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    fke_before = [p.detach().clone() for n, p in net.named_parameters() if '.fke.' in n]
    for _ in range(2):
        out = net(x)
        out = prediction(out)
        loss = (out - torch.rand_like(out)).abs().mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        assert torch.isfinite(loss)
    fke_after = [p for n, p in net.named_parameters() if '.fke.' in n]
    assert any(not torch.equal(a, b) for a, b in zip(fke_before, fke_after))


def test_plain_base_checkpoint_loads_and_reports_fke_keys():
    net, opt = build('EDSR', 'at: ["body.0", "body.1"]')
    base = build_network(dict(opt['base']))
    fke_before = {k: v.clone() for k, v in net.state_dict().items() if '.fke.' in k}
    result = load_checkpoint(net, {'params': base.state_dict()})  # strict: only the FKEs may be absent
    assert not result.unexpected_keys and set(result.missing_keys) == set(fke_before) and fke_before
    assert all(torch.equal(net.state_dict()[k], v) for k, v in fke_before.items())
    missing_base = {k: v for k, v in base.state_dict().items() if not k.startswith('conv_last.')}
    with pytest.raises(CheckpointMismatchError, match='missing'):
        load_checkpoint(build('EDSR', 'at: ["body.0", "body.1"]')[0], missing_base)
    x = torch.rand(1, 3, 12, 12)
    torch.testing.assert_close(net.base.body[0].inner(base.conv_first(x)), base.body[0](base.conv_first(x)))
    # our own layout round-trips strictly
    net2, _ = build('EDSR', 'at: ["body.0", "body.1"]')
    net2.load_state_dict(net.state_dict(), strict=True)


def test_freeze_base_leaves_base_grads_none():
    net, _ = build('EDSR', 'freeze_base: true')
    out = net(torch.rand(1, 3, 12, 12))
    out.mean().backward()
    fke_grads = [p.grad for name, p in net.named_parameters() if '.fke.' in name and 'alphas' not in name]
    assert fke_grads and all(g is not None for g in fke_grads)  # (a first column's alphas scale a zero state)
    for name, p in net.named_parameters():
        if '.fke.' not in name:
            assert p.grad is None and not p.requires_grad


def test_fke_state_chains_between_attachment_points():
    net, _ = build('EDSR', 'at: ["body.*"]')
    assert net.attach_points == ['body.0', 'body.1']
    first, second = net.base.body[0].fke, net.base.body[1].fke
    assert first.first_column and not second.first_column
    assert second.column.levels[0].fusion is not None  # the later FKE fuses the previous state


@pytest.mark.parametrize('name, at, message', [('EDSR', 'body.7', 'matches no module'),
                                               ('EDSR', 'conv_first2', 'matches no module'),
                                               ('SwinIR', 'patch_embed', 'does not output a feature map')])
def test_bad_attach_point_lists_nearest_modules(name, at, message):
    with pytest.raises(ValueError, match=message) as err:
        build(name, f'at: ["{at}"]')
    assert 'Nearest' in str(err.value) and ('body.' in str(err.value) or 'layers.' in str(err.value)
                                            or 'conv_' in str(err.value))


def test_parameter_overhead_matches_spec_at_width_48():
    """docs/architecture.md: 92,000 for the first FKE and 105,968 for each later one at C = width = 48, 4 levels."""
    opt = yaml.safe_load('type: FKEAttach\nbase: {type: EDSR, num_in_ch: 3, num_out_ch: 3, num_feat: 48, '
                         'num_block: 3, upscale: 2}\nat: ["body.*"]\nfke: {width: 48, levels: 4}')
    net = build_network(opt)
    assert net.fke_params == [92_000, 105_968, 105_968]
