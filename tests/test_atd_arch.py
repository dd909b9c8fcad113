"""ATD-light (+FKE) (docs/architecture.md): exact sizes and keys, official-checkpoint loading, attention parts against
loop references, test-time geometries, batch handling, and BasicSR training from the YAML options."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import fke_basicsr  # noqa: F401  (shims + registration before basicsr)
from fke_basicsr.archs.atd_arch import (ATD, CategoryAttention, WindowAttention, _Geometry, relative_position_index,
                                        shifted_window_mask)
from fke_basicsr.checkpoints import CheckpointMismatchError, load_checkpoint, to_official
from fke_basicsr.profile import count_parameters
from fke_basicsr.ops.geometry import WindowGrid
from fke_basicsr.protocol import TestTimeProtocol

REPO = Path(__file__).resolve().parents[1]
KEYS = REPO / 'tests' / 'data' / 'official_keys'
# A small ATD with the same structure (windows 4, tiles 16) for behaviour tests that run forwards.
TINY = dict(embed_dim=12, depths=(2, 2), num_heads=(2, 2), window_size=4, category_size=8, num_tokens=8,
            reducted_dim=4, convffn_kernel_size=3, fke_window={'size': 16, 'overlap': 4})
# The test-time modes of the options files, as protocols (val: sections; docs/evaluation.md).
PROTOCOLS = {'pad': dict(size_multiple=4, pad_mode='symmetric'), 'whole': dict(),
             'tile': dict(tile=16, overlap=4, batch=16)}


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """One intra-op thread: on a shared, oversubscribed 2-core box, 2 spinning threads make these many small
    ops ~40x slower (measured: ATD-light eval on 16x16 0.55 s with 1 thread, 21 s with 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _official_state_dict(name: str, seed: int = 0) -> dict:
    """Random tensors with the shapes listed in an official key file (the int64 buffer gets real indices)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for line in (KEYS / name).read_text().splitlines():
        key, shape = line.split('\t')
        shape = [int(s) for s in shape.strip('[]').split(',') if s.strip()]
        sd[key] = relative_position_index(16) if key == 'relative_position_index_SA' else torch.randn(shape,
                                                                                                       generator=g)
    return sd


# ----------------------------------------------------------------------------------------------- sizes, keys
@pytest.mark.parametrize('scale,fke,expected', [(2, False, 753_204), (3, False, 759_699), (4, False, 768_792),
                                                (2, True, 1_163_108), (3, True, 1_169_603), (4, True, 1_178_696)])
def test_parameter_counts_match_table5(scale, fke, expected):
    model = ATD(upscale=scale, fke=fke)
    assert count_parameters(model) == expected
    if fke:  # FKE cost is scale-independent: first column 92,000, later ones 105,968
        assert [count_parameters(m) for m in model.ker_ests] == [92_000, 105_968, 105_968, 105_968]


def test_official_atd_light_checkpoint_loads_strictly():
    sd = _official_state_dict('atd_light_x2_official_keys.txt')
    assert len(sd) == 683
    model = ATD(upscale=2)
    model.load_state_dict(sd, strict=True)
    for key in ('layers.3.residual_group.layers.4.attn_atd.scale', 'upsample.0.weight', 'patch_embed.norm.bias'):
        assert torch.equal(model.state_dict()[key], sd[key])
    fresh = ATD(upscale=2)
    result = load_checkpoint(fresh, {'params_ema': sd})
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in sd.items())


def test_official_atd_fke_checkpoint_loads_strictly():
    sd = _official_state_dict('atd_light_fke_x2_official_keys.txt', seed=1)
    assert len(sd) == 989
    model = ATD(upscale=2, fke=True)
    model.load_state_dict(sd, strict=True)  # the pre-hook renames ker_ests.* onto our FKE names
    ours = model.state_dict()
    assert torch.equal(ours['ker_ests.2.proj_kernel.weight'], sd['ker_ests.2.feature_extract.intro_inp.0.weight'])
    assert torch.equal(ours['ker_ests.1.fuse.weight'], sd['ker_ests.1.deblur_feature1.0.weight'])
    fresh = ATD(upscale=2, fke=True)
    result = load_checkpoint(fresh, {'params': {f'module.{k}': v for k, v in sd.items()}}, param_key='params')
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in ours.items())
    # the registered layout is a bijection: ours -> official gives back the file's keys
    assert set(to_official(ours, 'ATD')) == set(sd)


def test_atd_light_weights_into_fke_model_report_fke_keys():
    sd = _official_state_dict('atd_light_x2_official_keys.txt')
    model = ATD(upscale=2, fke=True)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith('ker_ests.')}
    result = load_checkpoint(model, sd)  # strict: only the FKE chain may be absent
    assert len(result.missing_keys) == 306 and set(result.missing_keys) == set(before)
    assert result.unexpected_keys == []
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # FKE untouched
    assert torch.equal(model.state_dict()['layers.1.conv.weight'], sd['layers.1.conv.weight'])
    partial = {k: v for k, v in ATD(upscale=2, fke=True).state_dict().items() if not k.startswith('ker_ests.3.')}
    with pytest.raises(CheckpointMismatchError, match='missing'):  # some FKE keys but not all: strict again
        load_checkpoint(ATD(upscale=2, fke=True), partial)


def test_x2_to_x3_finetune_loads_all_but_upsampler():
    x2 = ATD(upscale=2, fke=True)
    x3 = ATD(upscale=3, fke=True)
    with pytest.raises(CheckpointMismatchError, match=r'upsample.0.weight: checkpoint \(12, 48, 3, 3\) vs model '
                                                      r'\(27, 48, 3, 3\)'):
        load_checkpoint(x3, {'params': x2.state_dict()}, strict=False)  # shapes never load silently
    # the finetune recipe: everything but the rescaled upsampler, which stays at init
    body = {k: v for k, v in x2.state_dict().items() if not k.startswith('upsample.')}
    result = load_checkpoint(x3, {'params': body}, strict=False)
    assert result.missing_keys == ['upsample.0.weight', 'upsample.0.bias'] and len(body) == 989 - 2
    sd3 = x3.state_dict()
    assert all(torch.equal(v, sd3[k]) for k, v in body.items())


def test_loading_errors_are_readable():
    fke_sd = ATD(**TINY, fke=True).state_dict()
    with pytest.raises(CheckpointMismatchError, match=r'(?s)unknown keys.*ker_ests.*fke\)'):
        load_checkpoint(ATD(**TINY), fke_sd)
    no_conv = {k: v for k, v in ATD(**TINY).state_dict().items() if not k.startswith('conv_first.')}
    with pytest.raises(CheckpointMismatchError, match='missing keys.*conv_first'):
        load_checkpoint(ATD(**TINY, fke=True), no_conv)
    with pytest.raises(CheckpointMismatchError, match='shape'):
        load_checkpoint(ATD(**TINY, upscale=3), ATD(**TINY).state_dict())
    with pytest.raises(ValueError, match='upsampler'):
        ATD(upsampler='pixelshuffle')


# ----------------------------------------------------------------------------------------------- geometry
def _ref_window_attention(mod: WindowAttention, qkv: torch.Tensor, h: int, w: int, shift: int) -> torch.Tensor:
    """Loop reference: per window, dense attention with explicit bias/mask; edge windows own only the remainder."""
    b, _, c3 = qkv.shape
    ws, nh, c = mod.window_size, mod.num_heads, c3 // 3
    x = qkv.reshape(b, h, w, c3)
    if shift:
        x = torch.roll(x, (-shift, -shift), (1, 2))

    def region(p, size):
        return 0 if p < size - ws else (1 if p < size - shift else 2)

    def owner_start(p, size):
        return (p // ws) * ws if p < (size // ws) * ws else size - ws

    out = torch.zeros(b, h, w, c)
    rows = list(range(0, h - ws + 1, ws)) + ([h - ws] if h % ws else [])
    cols = list(range(0, w - ws + 1, ws)) + ([w - ws] if w % ws else [])
    pos = [(i // ws, i % ws) for i in range(ws * ws)]
    for r in rows:
        for c0 in cols:
            tok = x[:, r:r + ws, c0:c0 + ws].reshape(b, ws * ws, 3, nh, c // nh)
            q, k, v = tok[:, :, 0].transpose(1, 2), tok[:, :, 1].transpose(1, 2), tok[:, :, 2].transpose(1, 2)
            bias = torch.zeros(nh, ws * ws, ws * ws)
            mask = torch.zeros(ws * ws, ws * ws)
            for i, (yi, xi) in enumerate(pos):
                for j, (yj, xj) in enumerate(pos):
                    row = (yi - yj + ws - 1) * (2 * ws - 1) + (xi - xj + ws - 1)
                    bias[:, i, j] = mod.relative_position_bias_table[row]
                    if shift and (region(r + yi, h), region(c0 + xi, w)) != (region(r + yj, h), region(c0 + xj, w)):
                        mask[i, j] = -100.0
            attn = (q @ k.transpose(-2, -1)) / math.sqrt(c // nh) + bias + mask
            o = mod.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, ws * ws, c))
            for i, (yi, xi) in enumerate(pos):
                gy, gx = r + yi, c0 + xi
                if owner_start(gy, h) == r and owner_start(gx, w) == c0:
                    out[:, gy, gx] = o[:, i]
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    return out.reshape(b, h * w, c)


@pytest.mark.parametrize('h,w,shift', [(8, 8, 0), (8, 12, 2), (10, 13, 0), (10, 13, 2)])
def test_window_attention_against_loop_reference(h, w, shift):
    torch.manual_seed(0)
    mod = WindowAttention(8, 4, 2)
    with torch.no_grad():
        mod.relative_position_bias_table.normal_()
    qkv = torch.randn(2, h * w, 24)
    geo = _Geometry((h, w), WindowGrid(h, w, 4), shifted_window_mask(h, w, 4, 2), relative_position_index(4))
    with torch.no_grad():
        torch.testing.assert_close(mod(qkv, geo, shift), _ref_window_attention(mod, qkv, h, w, shift),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('n,group', [(12, 5), (12, 12), (16, 4)])
def test_category_attention_against_loop_reference(n, group):
    torch.manual_seed(1)
    b, c, heads, m = 2, 8, 2, 16
    mod = CategoryAttention(c, heads, group)
    with torch.no_grad():
        mod.logit_scale.fill_(0.7)
    qkv = torch.randn(b, n, 3 * c)
    # distinct categories per token, so any sort gives the same grouping as the reference's
    cats = torch.stack([torch.randperm(m)[:n] for _ in range(b)])
    sim = torch.rand(b, n, m).scatter_(2, cats[..., None], 5.0).softmax(-1)
    out = torch.zeros(b, n, c)
    for bi in range(b):
        order = np.argsort(cats[bi].numpy(), kind='stable')
        seq = qkv[bi, torch.from_numpy(order)]
        gs = min(n, group)
        pad = math.ceil(n / gs) * gs - n
        seq = torch.cat([seq, seq[n - pad:].flip(0)]) if pad else seq
        res = torch.zeros(len(seq), c)
        for g0 in range(0, len(seq), gs):
            for hd in range(heads):
                sl = slice(hd * c // heads, (hd + 1) * c // heads)
                q, k, v = (seq[g0:g0 + gs, part * c:(part + 1) * c][:, sl] for part in range(3))
                res[g0:g0 + gs, sl] = ((q @ k.T) * math.exp(0.7)).softmax(-1) @ v
        for i, src in enumerate(order):
            out[bi, src] = res[i]
    with torch.no_grad():
        torch.testing.assert_close(mod(qkv, sim), mod.proj(out), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize('scale,fke,val', [(2, False, {'size_multiple': 16, 'pad_mode': 'symmetric'}),
                                           (4, True, {'tile': {'size': 64, 'overlap': 16}})])
def test_full_model_shapes_non_multiple_batch2(scale, fke, val):
    model = ATD(upscale=scale, fke=fke).eval()
    x = torch.rand(2, 3, 11, 13)  # one 16×16 window after padding: cheap on CPU
    with torch.no_grad():
        y = TestTimeProtocol.from_options(val, model)(model, x)
    assert y.shape == (2, 3, 11 * scale, 13 * scale) and torch.isfinite(y).all()


def _tiny(fke: bool, scale: int = 2, seed: int = 0) -> ATD:
    torch.manual_seed(seed)
    return ATD(upscale=scale, fke=fke, **TINY).eval()


def _run(model: ATD, mode: str, x: torch.Tensor) -> torch.Tensor:
    return TestTimeProtocol(scale=model.upscale, **PROTOCOLS[mode])(model, x)


@pytest.mark.parametrize('fke', [False, True])
@pytest.mark.parametrize('mode', ['pad', 'whole', 'tile'])
def test_batch_equals_per_sample(fke, mode):
    model = _tiny(fke)
    x = torch.rand(2, 3, 19, 22)  # not a multiple of the window (4); several 16-tiles
    with torch.no_grad():
        y = _run(model, mode, x)
        singles = torch.cat([_run(model, mode, x[i:i + 1]) for i in range(2)])
    assert y.shape == (2, 3, 38, 44)
    torch.testing.assert_close(y, singles, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('fke', [False, True])
def test_tile_equals_whole_when_image_fits_one_tile(fke):
    model = _tiny(fke)
    x = torch.rand(2, 3, 14, 15)  # <= tile size 16: a single tile, no blending
    with torch.no_grad():
        torch.testing.assert_close(_run(model, 'tile', x), _run(model, 'whole', x), rtol=0, atol=1e-6)
        torch.testing.assert_close(model(x), _run(model, 'whole', x), rtol=0, atol=0)


def test_pad_equals_whole_on_window_multiples_and_differs_otherwise():
    model = _tiny(False)
    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        assert torch.equal(_run(model, 'pad', x), _run(model, 'whole', x))
        x = torch.rand(1, 3, 10, 13)
        assert not torch.allclose(_run(model, 'pad', x), _run(model, 'whole', x))
        x = torch.rand(2, 3, 3, 2)  # below one window: 'whole' falls back to the mirror padding
        pad = _run(model, 'pad', x)
        assert torch.equal(pad, _run(model, 'whole', x)) and pad.shape == (2, 3, 6, 4)


def test_tile_mode_matches_manual_tiling_of_whole_image_features():
    from fke_basicsr.ops.geometry import TileGrid

    model = _tiny(True, scale=3)
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        y = _run(model, 'tile', x)
        mean = model.mean
        feat = model.conv_first(x - mean)  # conv_first sees the whole image, tiles start after it
        grid = TileGrid((21, 30), 16, 4)
        out = torch.zeros(1, 3, 63, 90)
        for k, (r, c, h, w) in enumerate(grid.boxes()):
            tile = feat[:, :, r:r + h, c:c + w]
            hr = model.upsample(model.conv_after_body(model.forward_body(tile)) + tile)
            out[:, :, 3 * r:3 * (r + h), 3 * c:3 * (c + w)] += hr * grid.weight(k, 3)
    assert len(grid) == 6  # rows [0, 5], cols [0, 12, 14]
    torch.testing.assert_close(y, out + mean, rtol=1e-5, atol=1e-5)


def test_training_forward_runs_the_whole_patch_and_backpropagates():
    model = _tiny(True).train()
    x = torch.rand(2, 3, 20, 20, requires_grad=True)  # larger than a tile: the network itself never tiles
    y = model(x)
    feat = model.conv_first(x - model.mean)
    torch.testing.assert_close(y, model._reconstruct(feat) + model.mean, rtol=1e-5, atol=1e-5)
    y.mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith('ker_ests.1.'))
    ckpt = ATD(upscale=2, fke=True, use_checkpoint=True, **TINY).train()  # activation checkpointing: same grads
    ckpt.load_state_dict(model.state_dict())
    ckpt(x.detach()).mean().backward()
    for (name, p), q in zip(model.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------------------------- BasicSR
def _tiny_sr_folder(root: Path, scale: int, n: int = 2, lr: int = 16) -> tuple[Path, Path]:
    import cv2
    rng = np.random.default_rng(0)
    gt_dir, lq_dir = root / 'HR', root / f'LR_bicubic/X{scale}'
    gt_dir.mkdir(parents=True)
    lq_dir.mkdir(parents=True)
    for i in range(n):
        hr = cv2.resize(rng.uniform(0, 255, (6, 6, 3)).astype(np.float32), (lr * scale, lr * scale),
                        interpolation=cv2.INTER_CUBIC).clip(0, 255).round().astype(np.uint8)
        cv2.imwrite(str(gt_dir / f'im{i}.png'), hr)
        cv2.imwrite(str(lq_dir / f'im{i}.png'), cv2.resize(hr, (lr, lr), interpolation=cv2.INTER_AREA))
    return gt_dir, lq_dir


@pytest.mark.parametrize('yml', ['train_ATD_light_FKE_SRx2_scratch.yml', 'train_ATD_light_SRx3_scratch.yml'])
def test_two_training_iterations_from_yaml(tmp_path, yml):
    from basicsr.data import build_dataset
    from basicsr.models import build_model
    from fke_basicsr.options import load_yaml

    opt = load_yaml(REPO / 'options/train/SR' / yml)
    scale = opt['scale']
    gt_dir, lq_dir = _tiny_sr_folder(tmp_path / 'data', scale)
    train = opt['datasets']['train']
    train.update(dataroot_gt=str(gt_dir), dataroot_lq=str(lq_dir), io_backend={'type': 'disk'}, gt_size=16 * scale,
                 batch_size_per_gpu=2, num_worker_per_gpu=0, phase='train', scale=scale)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=0)
    opt['path'].update(experiments_root=str(tmp_path / 'exp'), models=str(tmp_path / 'exp/models'),
                       training_states=str(tmp_path / 'exp/states'), log=str(tmp_path / 'exp'),
                       visualization=str(tmp_path / 'exp/vis'))
    model = build_model(opt)
    assert type(model.optimizer_g) is torch.optim.AdamW and model.optimizer_g.defaults['betas'] == (0.9, 0.9)
    net = model.get_bare_model(model.net_g)
    assert isinstance(net, ATD) and net.upscale == scale and count_parameters(net) == (
        1_163_108 if net.ker_ests is not None else 759_699)
    batch = next(iter(torch.utils.data.DataLoader(build_dataset(train), batch_size=2)))
    assert batch['lq'].shape == (2, 3, 16, 16) and batch['gt'].shape == (2, 3, 16 * scale, 16 * scale)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    for it in (1, 2):
        model.update_learning_rate(it, warmup_iter=opt['train']['warmup_iter'])
        model.feed_data(batch)
        model.optimize_parameters(it)
        assert math.isfinite(model.log_dict['l_pix'])
    assert model.get_current_learning_rate()[0] == pytest.approx(float(opt['train']['optim_g']['lr']) * 2 /
                                                                 opt['train']['warmup_iter'])
    assert not torch.equal(start['conv_first.weight'], net.state_dict()['conv_first.weight'])
    model.feed_data({'lq': batch['lq'][:1, :, :13, :11]})
    model.test()  # EMA network, eval protocol of the YAML's val: (tile for FKE, symmetric pad otherwise)
    assert model.output.shape == (1, 3, 13 * scale, 11 * scale)


def test_yaml_recipes_are_consistent():
    from fke_basicsr.options import load_yaml

    train_files = sorted((REPO / 'options/train/SR').glob('train_ATD_light*.yml'))
    test_files = sorted((REPO / 'options/test/SR').glob('test_ATD_light*.yml'))
    assert len(train_files) == 10 and len(test_files) == 6
    for path in train_files:
        opt = load_yaml(path)
        s, net, tr = opt['scale'], opt['network_g'], opt['train']
        assert net['upscale'] == s and net['fke'] == ('_FKE_' in path.name)
        assert opt['datasets']['train']['gt_size'] == 64 * s and f'X{s}' in opt['datasets']['train']['dataroot_lq']
        assert tr['optim_g']['type'] == 'AdamW' and tr['optim_g']['betas'] == [0.9, 0.9] and tr['ema_decay'] == 0.999
        assert all(m['crop_border'] == s and m['test_y_channel'] for m in opt['val']['metrics'].values())
        _assert_eval_protocol(opt, net['fke'])
        if 'finetune' in path.name:
            assert (tr['total_iter'], float(tr['optim_g']['lr']), tr['warmup_iter']) == (250_000, 2e-4, 10_000)
            assert opt['path']['strict_load_g'] is False and 'SRx2_scratch' in opt['path']['pretrain_network_g']
            assert ('_FKE_' in opt['path']['pretrain_network_g']) == net['fke']
        else:
            assert (tr['total_iter'], float(tr['optim_g']['lr']), tr['warmup_iter']) == (500_000, 5e-4, 20_000)
        assert 'Table 5' in path.read_text().splitlines()[4] or 'Table 5' in path.read_text()[:600]
    for path in test_files:
        opt = load_yaml(path)
        s = opt['scale']
        names = [d['name'] for d in opt['datasets'].values()]
        assert names == ['Set5', 'Set14', 'BSD100', 'Urban100', 'Manga109']
        assert all(d['dataroot_lq'].endswith(f'LR_bicubic/X{s}') for d in opt['datasets'].values())
        assert all(m['crop_border'] == s and m['test_y_channel'] for m in opt['val']['metrics'].values())
        _assert_eval_protocol(opt, opt['network_g']['fke'])
        assert 'Table 5' in path.read_text()[:400]


def _assert_eval_protocol(opt: dict, fke: bool) -> None:
    """FKE models: DeepRFTv2's 64/16 feature tiles; plain ATD-light: the original mirror padding to 16."""
    val = opt['val']
    if fke:
        assert val['tile'] == {'size': 64, 'overlap': 16, 'batch': 16} and 'size_multiple' not in val
    else:
        assert 'tile' not in val and (val['size_multiple'], val['pad_mode']) == (16, 'symmetric')
    assert not {'test_mode', 'tile_size', 'tile_overlap', 'tile_batch'} & set(opt['network_g'])
