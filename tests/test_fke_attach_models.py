"""FKEAttach inside the BasicSR model class BasicSR's own options use for each base arch: one training step and a
validation pass on an image that is not a multiple of the window size (tiny nets, generated data, CPU)."""
import glob
import os
import os.path as osp
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

import fke_basicsr  # noqa: F401  (shims before basicsr)
from basicsr.data import build_dataloader, build_dataset  # noqa: E402
from basicsr.models import build_model  # noqa: E402

from fke_basicsr.archs.fke_attach_arch import AttachOptions, expose_base_options  # noqa: E402

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
BASES = {  # base arch options, model class of BasicSR's options/train files for it
    'EDSR': ({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 1, 'upscale': 2,
              'res_scale': 1, 'img_range': 255.0, 'rgb_mean': [0.4488, 0.4371, 0.4040]}, 'SRModel'),
    'MSRResNet': ({'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 1,
                   'upscale': 2}, 'SRModel'),
    'RCAN': ({'type': 'RCAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_group': 1, 'num_block': 1,
              'squeeze_factor': 4, 'upscale': 2}, 'SRModel'),
    'RRDBNet': ({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 2, 'num_feat': 16, 'num_block': 1,
                 'num_grow_ch': 8}, 'SRModel'),
    'SwinIR': ({'type': 'SwinIR', 'upscale': 2, 'in_chans': 3, 'img_size': 16, 'window_size': 4, 'img_range': 1.0,
                'depths': [1], 'embed_dim': 12, 'num_heads': [2], 'mlp_ratio': 1, 'upsampler': 'pixelshuffle',
                'resi_connection': '1conv'}, 'SwinIRModel'),
}


def _write(folder, name, img):
    import cv2
    os.makedirs(folder, exist_ok=True)
    cv2.imwrite(osp.join(folder, name), (np.clip(img, 0, 1) * 255).round().astype(np.uint8))


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    import cv2
    root = tmp_path_factory.mktemp('attach_data')
    rng = np.random.default_rng(0)
    for split, n, (h, w) in (('train', 2, (32, 32)), ('val', 1, (20, 28))):  # val LR 10x14: not a multiple of 4
        for i in range(n):
            hr = cv2.resize(rng.random((h // 4, w // 4, 3)).astype(np.float32), (w, h))
            _write(root / split / 'HR', f'{i:03d}.png', hr)
            _write(root / split / 'LR', f'{i:03d}.png', cv2.resize(hr, (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    return root


def _datasets(data):
    def ds(split, **kw):
        return {'name': split, 'type': 'PairedImageDataset', 'dataroot_gt': str(data / split / 'HR'),
                'dataroot_lq': str(data / split / 'LR'), 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
                'scale': 2, **kw}
    return {'train': ds('train', phase='train', gt_size=16, use_hflip=True, use_rot=True, use_shuffle=True,
                        num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1, prefetch_mode=None),
            'val': ds('val', phase='val')}


def _options(data, tmp_path, base, model_type):
    return {
        'name': 'attach', 'model_type': model_type, 'scale': 2, 'num_gpu': 0, 'is_train': True, 'dist': False,
        'rank': 0, 'world_size': 1, 'manual_seed': 0, 'datasets': _datasets(data),
        'network_g': {'type': 'FKEAttach', 'base': dict(base), 'fke': {'width': 8, 'levels': 1}},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                 'models': str(tmp_path), 'training_states': str(tmp_path), 'visualization': str(tmp_path)},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-4, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5}, 'total_iter': 1,
                  'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': 1, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False}}},
    }


def _train_and_validate(opt):
    expose_base_options(opt)  # what the options loader of basicsr/train.py and test.py does
    model = build_model(opt)
    train_loader = build_dataloader(build_dataset(opt['datasets']['train']), opt['datasets']['train'], num_gpu=0,
                                    dist=False, sampler=None, seed=0)
    val_set = build_dataset(opt['datasets']['val'])
    val_loader = build_dataloader(val_set, opt['datasets']['val'], num_gpu=0, dist=False, sampler=None, seed=0)
    model.feed_data(next(iter(train_loader)))
    model.optimize_parameters(1)
    model.validation(val_loader, current_iter=1, tb_logger=None, save_img=False)
    assert np.isfinite(model.metric_results['psnr'])
    model.feed_data(next(iter(val_loader)))
    model.test()
    assert tuple(model.output.shape[-2:]) == (20, 28)  # the HR size of the 10x14 input, padding cropped back
    return model


@pytest.mark.parametrize('name', list(BASES))
def test_attach_trains_and_validates_in_basicsr_model_class(name, data, tmp_path):
    base, model_type = BASES[name]
    model = _train_and_validate(_options(data, tmp_path, base, model_type))
    assert type(model).__name__ == model_type


def test_restoration_model_learns_the_size_multiple_from_the_wrapped_arch(data, tmp_path):
    opt = _options(data, tmp_path, BASES['SwinIR'][0], 'RestorationModel')
    assert 'size_multiple' not in opt['val']
    model = _train_and_validate(opt)
    assert model.get_bare_model(model.net_g).size_multiple == 4


def test_attach_options_answer_base_keys_but_build_unchanged():
    net = AttachOptions({'type': 'FKEAttach', 'base': {'type': 'SwinIR', 'window_size': 8}, 'at': ['layers.0']})
    assert net['window_size'] == 8 and net.get('window_size') == 8 and net.get('num_feat', 3) == 3
    assert net['type'] == 'FKEAttach' and 'window_size' not in net and sorted(net) == ['at', 'base', 'type']
    with pytest.raises(KeyError):
        net['num_feat']


def test_basicsr_swinir_options_with_fke_attach_run_through_train_py(data, tmp_path):
    """BasicSR's SwinIR layout (SwinIRModel) with network_g wrapped in FKEAttach, through the real launcher."""
    name = f'pytest_attach_swinir_{os.getpid()}'
    opt = _options(data, tmp_path, BASES['SwinIR'][0], 'SwinIRModel')
    for key in ('is_train', 'dist', 'rank', 'world_size'):
        opt.pop(key)
    opt['name'] = name
    opt['path'] = {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}
    opt['train']['total_iter'] = 1
    opt['logger'] = {'print_freq': 1, 'save_checkpoint_freq': 1, 'use_tb_logger': False}
    for ds in opt['datasets'].values():
        ds.pop('phase', None)
        ds.pop('scale', None)
    yml = tmp_path / 'train_SwinIR_FKEAttach.yml'
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    try:
        proc = subprocess.run([sys.executable, 'basicsr/train.py', '-opt', str(yml)], cwd=ROOT, capture_output=True,
                              text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        log = '\n'.join(open(p).read() for p in glob.glob(osp.join(ROOT, 'experiments', name, 'train_*.log')))
        assert '# psnr:' in log
    finally:
        for top in ('experiments', 'tb_logger'):
            for path in glob.glob(osp.join(ROOT, top, name + '*')):
                shutil.rmtree(path, ignore_errors=True)
