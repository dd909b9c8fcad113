"""DeblurModel / RestorationModel in-process: losses vs a hand computation, progressive crops, option checks,
accumulation, AMP, schedulers, EMA, padded/tiled validation and atomic checkpoints (paper §4.1)."""
import copy
import glob
import math
import os

import pytest
import torch
import torch.nn.functional as F

import fke_basicsr  # noqa: F401  (registration)
from basicsr.models import build_model
from basicsr.utils.registry import MODEL_REGISTRY

from fke_basicsr.models.deblur_model import DeblurModel, parse_progressive
from fke_basicsr.models.restoration_model import CosineAnnealingRestartCyclicLR, RestorationModel
from fke_basicsr.ops.pyramid import gaussian_pyramid

torch.set_num_threads(1)

TINY_NET = dict(type='DeepRFTv2', variant='S', width=8, enc_blocks=[1, 1, 1], dec_blocks=[1, 1, 1], fke_width=8,
                fke_levels=1)


def make_opt(tmp_path, **train_over):
    train = dict(
        optim_g=dict(type='AdamW', lr=1e-3, weight_decay=1e-3, betas=[0.9, 0.9]),
        scheduler=dict(type='CosineAnnealingLR', eta_min=1e-7), total_iter=4,
        pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'),
        fft_loss_opt=dict(type='FreqLoss', loss_weight=0.01, reduction='mean'))
    train.update(train_over)
    paths = {k: str(tmp_path / k) for k in ('models', 'training_states', 'visualization')}
    for p in paths.values():
        os.makedirs(p, exist_ok=True)
    return dict(name='unit', model_type='DeblurModel', scale=1, num_gpu=0, manual_seed=7, is_train=True, dist=False,
                rank=0, world_size=1, network_g=dict(TINY_NET),
                datasets=dict(train=dict(name='t', type='PairedImageDataset', gt_size=32, batch_size_per_gpu=4)),
                path=dict(pretrain_network_g=None, strict_load_g=True, **paths), train=train,
                val=dict(val_freq=1, save_img=False))


def build(opt):
    torch.manual_seed(0)
    return build_model(copy.deepcopy(opt))


def batch(n=4, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, 3, size, size, generator=g)
    return {'lq': (gt + 0.1 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1), 'gt': gt}


def test_registered():
    assert MODEL_REGISTRY.get('DeblurModel') is DeblurModel
    assert MODEL_REGISTRY.get('RestorationModel') is RestorationModel
    assert issubclass(DeblurModel, RestorationModel)


def test_losses_equal_hand_computation(tmp_path):
    """Total = mean_4 L1(full, gt) + 0.01 mean_4 F(full, gt) + the same for half vs the pyramid GT (paper §4.1)."""
    model = build(make_opt(tmp_path))
    data = batch(2)
    net = model.net_g
    net.train()
    out = net(data['lq'])
    assert len(out.full) == 4 and len(out.half) == 4
    total, terms = model.compute_losses(out, data['gt'])
    gt, gt2 = data['gt'], gaussian_pyramid(data['gt'], 2)[1]

    def freq(p, t):  # independent: torch.fft in float64, complex modulus of the difference, mean
        return (torch.fft.rfft2(p.double()) - torch.fft.rfft2(t.double())).abs().mean()

    ref = {'l_pix': sum(F.l1_loss(o, gt) for o in out.full) / 4,
           'l_fft': 0.01 * sum(freq(o, gt) for o in out.full) / 4,
           'l_pix_half': sum(F.l1_loss(o, gt2) for o in out.half) / 4,
           'l_fft_half': 0.01 * sum(freq(o, gt2) for o in out.half) / 4}
    assert list(terms) == list(ref)
    for k in ref:
        assert torch.allclose(terms[k].double(), ref[k].double(), rtol=1e-5), k
    assert torch.allclose(total.double(), sum(ref.values()).double(), rtol=1e-5)
    assert out.half[0].shape[-2:] == gt2.shape[-2:] == (16, 16)


def test_mimo_quarter_outputs_are_supervised(tmp_path):
    """MIMO-UNet (Fig. 3 c) also predicts quarter-res images: they get L1 + FreqLoss vs pyramid level 2."""
    opt = make_opt(tmp_path)
    opt['network_g'] = dict(type='DeepRFTv2Ablation', variant=None, num_columns=1, width=8, mid_scale=False,
                            fke=False, mimo=True)
    model = build(opt)
    data = batch(2)
    out = model.net_g.train()(data['lq'])
    total, terms = model.compute_losses(out, data['gt'])
    gt4 = gaussian_pyramid(gaussian_pyramid(data['gt'], 2)[1], 2)[1]  # two single pyr_down steps
    assert list(terms) == ['l_pix', 'l_fft', 'l_pix_half', 'l_fft_half', 'l_pix_quarter', 'l_fft_quarter']
    ref = sum(F.l1_loss(o, gt4) for o in out.quarter) / len(out.quarter)
    assert out.quarter[0].shape[-2:] == gt4.shape[-2:] == (8, 8)
    assert torch.allclose(terms['l_pix_quarter'].double(), ref.double(), rtol=1e-5)
    assert torch.allclose(total, sum(terms.values()))
    total.backward()  # the coarse-output heads (half, quarter) train only through their own losses
    heads = model.net_g.decoders_max[0].heads
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.parameters())


def test_optimize_clips_to_authors_norm(tmp_path):
    model = build(make_opt(tmp_path))
    assert model.use_grad_clip and model.grad_clip_norm == 0.01
    model.feed_data(batch())
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert {'l_pix', 'l_fft', 'l_pix_half', 'l_fft_half', 'grad_norm'} <= set(log)
    assert all(math.isfinite(v) for v in log.values())
    # after clip_grad_norm_ the gradient norm is at most 0.01
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.net_g.parameters() if p.grad is not None]))
    assert norm <= 0.01 * (1 + 1e-4)


def test_progressive_switches_crop_and_batch(tmp_path):
    stages = [dict(iters=2, gt_size=32, batch=4), dict(iters=2, gt_size=16, batch=2)]
    model = build(make_opt(tmp_path, progressive=stages))
    data = batch()
    model.feed_data(data)
    shapes = [tuple(model.training_batch(t)[1].shape) for t in (1, 2, 3, 4)]
    assert shapes == [(4, 3, 32, 32)] * 2 + [(2, 3, 16, 16)] * 2
    assert [model.stage_at(t) for t in (1, 2, 3, 4)] == [0, 0, 1, 1]
    for t in (3, 4):
        lq, gt = model.training_batch(t)
        # each crop is a window of one loaded image, the same window of LQ and GT
        for i in range(2):
            hits = [(b, y, x) for b in range(4) for y in range(17) for x in range(17)
                    if torch.equal(data['gt'][b, :, y:y + 16, x:x + 16], gt[i])]
            assert len(hits) == 1
            b, y, x = hits[0]
            assert torch.equal(data['lq'][b, :, y:y + 16, x:x + 16], lq[i])
    # deterministic for (seed, iter): a fresh model (e.g. after resume) draws the same crops
    again = build(make_opt(tmp_path, progressive=stages))
    again.feed_data(data)
    assert torch.equal(again.training_batch(3)[1], model.training_batch(3)[1])
    model.optimize_parameters(3)
    assert math.isfinite(model.get_current_log()['l_pix'])


def test_gradient_accumulation_equals_full_batch(tmp_path):
    """accum_iter splits the loaded batch into micro-batches: same update as one full batch (SGD, no clip)."""
    over = dict(optim_g=dict(type='SGD', lr=1.0), use_grad_clip=False)
    data = batch()
    updates = []
    for accum in (1, 2):
        model = build(make_opt(tmp_path, accum_iter=accum, **over))
        before = [p.detach().clone() for p in model.net_g.parameters()]
        model.feed_data(data)
        model.optimize_parameters(1)
        updates.append([b - p.detach() for b, p in zip(before, model.net_g.parameters())])
    for u1, u2 in zip(*updates):
        assert torch.allclose(u1, u2, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_amp_trains_with_finite_loss(tmp_path, amp):
    model = build(make_opt(tmp_path, amp=amp))
    assert model.scaler.is_enabled() == (amp == 'fp16')
    model.feed_data(batch(2))
    model.optimize_parameters(1)
    assert all(math.isfinite(v) for v in model.get_current_log().values())


def test_schedulers_follow_their_formulas(tmp_path):
    model = build(make_opt(tmp_path, total_iter=10))
    sched, opt = model.schedulers[0], model.optimizers[0]
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    ref = [1e-7 + (1e-3 - 1e-7) * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(10)]
    assert lrs == pytest.approx(ref, rel=1e-9)

    param = torch.nn.Parameter(torch.zeros(1))
    o = torch.optim.SGD([param], lr=1.0)
    s = CosineAnnealingRestartCyclicLR(o, periods=[4, 6], restart_weights=[1, 0.5], eta_mins=[0.1, 0.01])
    got = []
    for _ in range(12):
        got.append(o.param_groups[0]['lr'])
        o.step()
        s.step()
    ref = [0.1 + 0.9 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(5)]
    ref += [0.01 + 0.5 * 0.99 * (1 + math.cos(math.pi * (t - 4) / 6)) / 2 for t in range(5, 11)] + [0.01]
    assert got == pytest.approx(ref, rel=1e-9)


def test_ema_tracks_parameters(tmp_path):
    model = build(make_opt(tmp_path, ema_decay=0.5))
    before = [p.detach().clone() for p in model.net_g_ema.parameters()]
    model.feed_data(batch(2))
    model.optimize_parameters(1)
    for b, e, p in zip(before, model.net_g_ema.parameters(), model.net_g.parameters()):
        assert torch.allclose(e, 0.5 * b + 0.5 * p.detach(), atol=1e-7)


def test_validation_pads_to_multiple_and_tiles(tmp_path):
    opt = make_opt(tmp_path)
    model = build(opt)
    g = torch.Generator().manual_seed(3)
    lq = torch.rand(1, 3, 36, 44, generator=g)
    model.feed_data({'lq': lq})
    model.test()
    assert model.output.shape == lq.shape and model.net_g.training
    net = model.net_g.eval()
    with torch.no_grad():
        ref = net(F.pad(lq, (0, 4, 0, 4))).full[-1][..., :36, :44]  # zero padding at the bottom/right (authors')
    net.train()
    assert torch.allclose(model.output, ref, atol=1e-6)
    tiled_opt = make_opt(tmp_path)
    tiled_opt['val']['tile'] = dict(size=32, overlap=8)
    tiled = build(tiled_opt)
    tiled.feed_data({'lq': lq})
    tiled.test()
    assert tiled.output.shape == lq.shape and torch.isfinite(tiled.output).all()
    # val.tile: the authors' tiles of the whole-image pyramid (fke_basicsr.protocol), on the zero-padded image
    from fke_basicsr.protocol import TestTimeProtocol
    tnet = tiled.net_g.eval()
    with torch.no_grad():
        ref = TestTimeProtocol(size_multiple=8, pad_mode='constant', tile=32, overlap=8)(tnet, lq)
    assert torch.allclose(tiled.output, ref, atol=1e-6)


def test_checkpoints_atomic_and_weights_only_loadable(tmp_path):
    model = build(make_opt(tmp_path, amp='fp16'))
    model.feed_data(batch(2))
    model.optimize_parameters(1)
    model.save(0, 1)
    files = sorted(os.listdir(tmp_path / 'models')) + sorted(os.listdir(tmp_path / 'training_states'))
    assert files == ['net_g_1.pth', '1.state']
    state = torch.load(tmp_path / 'training_states' / '1.state', weights_only=True)
    assert state['iter'] == 1 and 'scaler' in state
    params = torch.load(tmp_path / 'models' / 'net_g_1.pth', weights_only=True)['params']
    assert set(params) == set(model.net_g.state_dict())
    again = build(make_opt(tmp_path, amp='fp16'))
    again.resume_training(state)
    assert again.optimizers[0].state_dict()['state'].keys() == model.optimizers[0].state_dict()['state'].keys()
    assert again.scaler.get_scale() == model.scaler.get_scale()


@pytest.mark.parametrize('over, key', [
    (dict(progressive=[dict(iters=2, gt_size=30, batch=4), dict(iters=2, gt_size=16, batch=2)]), 'gt_size'),
    (dict(progressive=[dict(iters=2, gt_size=32, batch=4), dict(iters=3, gt_size=16, batch=2)]), 'total_iter'),
    (dict(progressive=[dict(iters=4, gt_size=40, batch=4)]), 'gt_size'),
    (dict(progressive=[dict(iters=4, gt_size=32, batch=8)]), 'batch_size_per_gpu'),
    (dict(progressive=[dict(iters=4, gt_size=32, batch=4, crop=1)]), 'progressive[0].crop'),
    (dict(learning_rate=1.0), 'train.learning_rate'),
    (dict(amp='fp8'), 'train.amp'),
    (dict(accum_iter=3), 'train.accum_iter'),
    (dict(optim_g=dict(type='Lion', lr=1e-3)), 'train.optim_g.type'),
    (dict(scheduler=dict(type='CosineAnnealingLR', T_mx=4)), 'train.scheduler'),
])
def test_bad_options_name_the_key(tmp_path, over, key):
    with pytest.raises(ValueError, match=key.replace('[', r'\[').replace(']', r'\]').replace('.', r'\.')):
        build(make_opt(tmp_path, **over))


def test_parse_progressive_non_square_and_world_size():
    stages = parse_progressive([dict(iters=5, gt_size=512, batch=16), dict(iters=10, gt_size=[776, 680], batch=8)],
                               15, [776, 680], 8, world_size=8, batch_per_gpu=2)
    assert [s.size for s in stages] == [(512, 512), (776, 680)]
    with pytest.raises(ValueError, match='world size'):
        parse_progressive([dict(iters=1, gt_size=8, batch=3)], 1, 8, 8, world_size=2, batch_per_gpu=2)


ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
PAPER_PARAMS = {'B': 30_117_560, 'S': 21_191_096}  # docs/architecture.md, Parameters and MACs
DEMO_PARAMS = 264_172  # options/*/Demo/DeepRFTv2-Demo.yml, docs/demo.md (264K)
OPTION_FILES = sorted(
    os.path.relpath(p, ROOT) for sub in ('train', 'test') for d in ('GoPro', 'HIDE', 'RealBlur', 'REDS', 'DPDD', 'Demo')
    for p in glob.glob(os.path.join(ROOT, 'options', sub, d, '*.yml')))


@pytest.mark.parametrize('path', OPTION_FILES)
def test_options_files_are_valid(path):
    """Every shipped deblurring options file passes the model's checks (per-GPU batches for its num_gpu), names
    the table cell it reproduces with its expected value, and builds the paper-sized network."""
    import yaml
    from basicsr.utils.options import ordered_yaml
    from basicsr.utils.registry import ARCH_REGISTRY
    text = open(os.path.join(ROOT, path)).read()
    header = ''.join(line for line in text.splitlines(True) if line.startswith('#'))
    assert 'expected' in header.lower()
    if '/Demo/' not in path:
        assert 'Table' in header
    opt = yaml.load(text, Loader=ordered_yaml()[0])
    is_train = '/train/' in path
    gpus = opt['num_gpu'] if isinstance(opt['num_gpu'], int) and opt['num_gpu'] > 0 else 1
    MODEL_REGISTRY.get(opt['model_type']).check_options(dict(opt, is_train=is_train, world_size=gpus))
    if is_train and opt['train'].get('progressive'):
        stages = opt['train']['progressive']
        assert max(s['batch'] for s in stages) == gpus * opt['datasets']['train']['batch_size_per_gpu']
        assert opt['train']['optim_g'] == {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 1e-3, 'betas': [0.9, 0.9]}
        assert opt['train']['scheduler']['eta_min'] == 1e-7
    net_opt = dict(opt['network_g'])
    with torch.device('meta'):
        net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
    n_params = sum(p.numel() for p in net.parameters())
    if '/Demo/' in path:
        assert n_params == DEMO_PARAMS  # the one-column demo layout docs/demo.md describes
    else:
        assert n_params == PAPER_PARAMS[net_opt['variant']]
