"""Exact resume: N uninterrupted iterations == N/2, then --auto_resume to N, bit for bit on the CPU.

Shuffled, randomly cropped, flipped and rotated data, a loader worker process, a resume point in the middle
of an epoch: the logged losses (every iteration) and the final weights and optimiser state must be identical.
"""
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
PREFIX = f'pytest_resume_{os.getpid()}'
N = 8  # 6 images, batch 2: 3 iterations per epoch, so the resume at 4 is one batch into epoch 1


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    import cv2
    root = tmp_path_factory.mktemp('resume_data')
    rng = np.random.default_rng(0)
    for sub in ('sharp', 'blur'):
        os.makedirs(root / sub)
    for i in range(6):
        sharp = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(root / 'sharp' / f'{i:03d}.png'), sharp)
        cv2.imwrite(str(root / 'blur' / f'{i:03d}.png'), cv2.blur(sharp, (5, 1)))
    return root



def _yml(tmp_path, data, name, total_iter):
    opt = {
        'name': name, 'model_type': 'DeblurModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 7,
        'datasets': {'train': {
            'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': str(data / 'sharp'),
            'dataroot_lq': str(data / 'blur'), 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
            'gt_size': 16, 'use_hflip': True, 'use_rot': True, 'use_shuffle': True, 'num_worker_per_gpu': 1,
            'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None}},
        'network_g': {'type': 'DeepRFTv2', 'variant': 'S', 'num_columns': 1, 'width': 8, 'enc_blocks': [1, 1, 1],
                      'dec_blocks': [1, 1, 1], 'fke_width': 8, 'fke_levels': 1},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'optim_g': {'type': 'AdamW', 'lr': 2e-3, 'weight_decay': 1e-3, 'betas': [0.9, 0.9]},
                  'scheduler': {'type': 'CosineAnnealingLR', 'T_max': N, 'eta_min': 1e-7},
                  'total_iter': total_iter, 'warmup_iter': -1, 'use_grad_clip': True, 'grad_clip_norm': 0.01,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
                  'fft_loss_opt': {'type': 'FreqLoss', 'loss_weight': 0.01, 'reduction': 'mean'}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': N // 2, 'use_tb_logger': False},
    }
    path = tmp_path / f'{name}_{total_iter}.yml'
    path.write_text(yaml.safe_dump(opt))
    return str(path)


def _train(yml, *extra):
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'basicsr', 'train.py'), '-opt', yml, *extra], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def _losses(name):
    text = '\n'.join(open(p).read() for p in sorted(glob.glob(osp.join(ROOT, 'experiments', name, 'train_*.log'))))
    found = re.finditer(r'iter:\s+(\d+), lr:\(([^)]*)\)\].*?\] (l_pix[^\n]*)', text)
    return {int(m.group(1)): (m.group(2), m.group(3)) for m in found}, text  # (lr, losses); timings dropped


def test_resume_mid_epoch_is_bit_exact(tmp_path, data, names):
    full, part = f'{PREFIX}_full', f'{PREFIX}_part'
    names += [full, part]
    _train(_yml(tmp_path, data, full, N))
    _train(_yml(tmp_path, data, part, N // 2))
    _train(_yml(tmp_path, data, part, N), '--auto_resume')
    ref, _ = _losses(full)
    got, log = _losses(part)
    assert 'Resuming the data stream at batch 1 of epoch 1' in log
    assert sorted(ref) == list(range(1, N + 1)) and sorted(got) == list(range(1, N + 1))
    for it in range(1, N + 1):  # lr and every loss term, as printed
        assert got[it] == ref[it], f'iteration {it}: {got[it]} vs {ref[it]}'
    models = [osp.join(ROOT, 'experiments', n, 'models', 'net_g_latest.pth') for n in (full, part)]
    a, b = (torch.load(p, weights_only=True)['params'] for p in models)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), 'weights after the resume differ from the uninterrupted run'
    sa, sb = (torch.load(osp.join(ROOT, 'experiments', n, 'training_states', f'{N}.state'), weights_only=True)
              for n in (full, part))
    for ga, gb in zip(sa['optimizers'][0]['state'].values(), sb['optimizers'][0]['state'].values()):
        assert all(torch.equal(ga[k], gb[k]) for k in ga), 'optimiser state differs'
    assert torch.equal(sa['rng']['torch'], sb['rng']['torch'])
    # and the network did train (the comparison is not between two untouched initialisations)
    first = torch.load(osp.join(ROOT, 'experiments', part, 'models', f'net_g_{N // 2}.pth'), weights_only=True)
    assert any(not torch.equal(first['params'][k], b[k]) for k in b)
