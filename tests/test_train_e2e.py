"""End to end through `python basicsr/train.py -opt <yml>`: outputs, exact --auto_resume, progressive stages,
early option errors and a 2-process gloo torchrun (tiny DeepRFTv2, 32x32 images, CPU)."""
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
PREFIX = f'pytest_e2e_{os.getpid()}'


def _write_pairs(folder, n, h, w, seed):
    import cv2
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(folder, 'sharp'))
    os.makedirs(osp.join(folder, 'blur'))
    for i in range(n):
        sharp = cv2.resize(rng.random((h // 4, w // 4, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        blur = cv2.blur(sharp, (5, 1))  # horizontal motion blur
        for sub, img in (('sharp', sharp), ('blur', blur)):
            cv2.imwrite(osp.join(folder, sub, f'{i:03d}.png'), (np.clip(img, 0, 1) * 255).round().astype(np.uint8))


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('e2e_data')
    _write_pairs(str(root / 'train'), 2, 32, 32, 0)
    _write_pairs(str(root / 'val'), 1, 36, 44, 1)  # not a multiple of 8: validation pads and crops back
    return root



def make_yml(tmp_path, data, name, total_iter=4, progressive=None, t_max=None, batch=2, save_freq=2, **train_over):
    opt = {
        'name': name, 'model_type': 'DeblurModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 10,
        'datasets': {
            'train': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': str(data / 'train' / 'sharp'),
                      'dataroot_lq': str(data / 'train' / 'blur'), 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
                      # whole 32x32 images, no flips: the loader is deterministic; crops come from the stages
                      'gt_size': 32, 'use_hflip': False, 'use_rot': False, 'use_shuffle': True,
                      'num_worker_per_gpu': 0, 'batch_size_per_gpu': batch, 'dataset_enlarge_ratio': 1,
                      'prefetch_mode': None},
            'val': {'name': 'tinyval', 'type': 'PairedImageDataset', 'dataroot_gt': str(data / 'val' / 'sharp'),
                    'dataroot_lq': str(data / 'val' / 'blur'), 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}}},
        'network_g': {'type': 'DeepRFTv2', 'variant': 'S', 'width': 8, 'enc_blocks': [1, 1, 1],
                      'dec_blocks': [1, 1, 1], 'fke_width': 8, 'fke_levels': 1},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 1e-3, 'betas': [0.9, 0.9]},
                  'scheduler': {'type': 'CosineAnnealingLR', 'T_max': t_max or total_iter, 'eta_min': 1e-7},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
                  'fft_loss_opt': {'type': 'FreqLoss', 'loss_weight': 0.01, 'reduction': 'mean'}},
        'val': {'val_freq': total_iter, 'save_img': True,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': save_freq, 'use_tb_logger': True},
    }
    if progressive is not None:
        opt['train']['progressive'] = progressive
    opt['train'].update(train_over)
    path = tmp_path / f'{name}_{total_iter}.yml'
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return str(path)


def train(yml, *args, launcher=None, timeout=240):
    cmd = [sys.executable, 'basicsr/train.py', '-opt', yml, *args]
    if launcher:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29561',
               'basicsr/train.py', '-opt', yml, '--launcher', 'pytorch', *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    return proc, proc.stdout + proc.stderr


def losses(log_text):
    """{iter: 'l_pix ... values'} from BasicSR's training log lines."""
    out = {}
    for m in re.finditer(r'iter:\s+(\d+), lr:\(([^)]*)\)\].*?(l_pix: .*?)\s*$', log_text, re.M):
        out[int(m.group(1))] = (m.group(2), m.group(3))
    return out


def read_log(name):
    logs = sorted(glob.glob(osp.join(ROOT, 'experiments', name, 'train_*.log')))
    return '\n'.join(open(p).read() for p in logs)


def test_train_writes_experiment_folder(tmp_path, data, names):
    name = f'{PREFIX}_basic'
    names.append(name)
    proc, out = train(make_yml(tmp_path, data, name, total_iter=2, save_freq=2))
    assert proc.returncode == 0, out[-3000:]
    exp = osp.join(ROOT, 'experiments', name)
    assert glob.glob(osp.join(exp, 'train_*.log'))
    assert osp.isfile(osp.join(exp, 'models', 'net_g_2.pth')) and osp.isfile(osp.join(exp, 'models',
                                                                                     'net_g_latest.pth'))
    assert osp.isfile(osp.join(exp, 'training_states', '2.state'))
    assert not glob.glob(osp.join(exp, '**', '*.tmp'), recursive=True)  # atomic saves leave no partial files
    vis = osp.join(exp, 'visualization', '000', '000_2.png')
    assert osp.isfile(vis)
    import cv2
    assert cv2.imread(vis).shape == (36, 44, 3)  # the prediction only, at the input size
    assert glob.glob(osp.join(ROOT, 'tb_logger', name, 'events.out.tfevents.*'))
    log = read_log(name)
    assert '# psnr:' in log and sorted(losses(log)) == [1, 2]


def test_auto_resume_continues_like_an_uninterrupted_run(tmp_path, data, names):
    """Stage boundary at 2, resume at 4: iterations 5-8 log the same lr and losses as one seeded 8-iter run, and the
    progressive stage is re-entered (shuffled, augmented, bit-exact resume: tests/test_resume_exact.py)."""
    full, part = f'{PREFIX}_full', f'{PREFIX}_part'
    names += [full, part]
    stages8 = [dict(iters=2, gt_size=32, batch=2), dict(iters=6, gt_size=16, batch=2)]
    stages4 = [dict(iters=2, gt_size=32, batch=2), dict(iters=2, gt_size=16, batch=2)]
    proc, out = train(make_yml(tmp_path, data, full, total_iter=8, progressive=stages8, save_freq=4))
    assert proc.returncode == 0, out[-3000:]
    # the interrupted run: stops after iteration 4 (state 4 saved), then resumes with the full schedule
    proc, out = train(make_yml(tmp_path, data, part, total_iter=4, progressive=stages4, t_max=8, save_freq=4))
    assert proc.returncode == 0, out[-3000:]
    proc, out = train(make_yml(tmp_path, data, part, total_iter=8, progressive=stages8, save_freq=4),
                      '--auto_resume')
    assert proc.returncode == 0, out[-3000:]
    log_full, log_part = read_log(full), read_log(part)
    assert 'Resuming training from epoch' in log_part and 'iter: 4.' in log_part
    assert not glob.glob(osp.join(ROOT, 'experiments', part + '_archived_*'))
    ref, got = losses(log_full), losses(log_part)
    assert sorted(ref) == list(range(1, 9)) and sorted(got) == list(range(1, 9))
    for it in range(1, 9):
        assert got[it][0] == ref[it][0], f'lr at iter {it}'
        a = re.findall(r'(l_\w+: [-\d.e+]+)', ref[it][1])
        b = re.findall(r'(l_\w+: [-\d.e+]+)', got[it][1])
        assert a and a == b, f'iter {it}: {ref[it][1]} vs {got[it][1]}'  # exact (bit-exact: test_resume_exact)
    # the stage switch is logged at the boundary in both runs
    assert re.search(r'Iter 3: progressive stage 1, gt_size 16x16', log_full)
    assert re.search(r'Iter 5: progressive stage 1, gt_size 16x16', log_part)  # re-entered after the resume


@pytest.mark.parametrize('case, key', [
    ('gt_size', 'gt_size'),
    ('iters', 'total_iter'),
    ('unknown', 'train.warm_restarts'),
    ('dataroot', 'dataroot_gt'),
])
def test_bad_options_fail_before_training(tmp_path, data, names, case, key):
    name = f'{PREFIX}_bad_{case}'
    names.append(name)
    kw = {}
    if case == 'gt_size':
        kw['progressive'] = [dict(iters=2, gt_size=28, batch=2)]
    elif case == 'iters':
        kw['progressive'] = [dict(iters=1, gt_size=16, batch=2)]
    elif case == 'unknown':
        kw['warm_restarts'] = 2
    yml = make_yml(tmp_path, data, name, total_iter=2, **kw)
    if case == 'dataroot':
        opt = yaml.safe_load(open(yml))
        opt['datasets']['train']['dataroot_gt'] = str(tmp_path / 'missing')
        open(yml, 'w').write(yaml.safe_dump(opt))
    proc, out = train(yml)
    assert proc.returncode != 0
    assert key in out, out[-2000:]
    assert 'Start training' not in out
    assert not osp.exists(osp.join(ROOT, 'experiments', name))  # checked before any folder is made


def test_torchrun_two_cpu_processes(tmp_path, data, names):
    name = f'{PREFIX}_ddp'
    names.append(name)
    yml = make_yml(tmp_path, data, name, total_iter=2, batch=1, save_freq=2)
    proc, out = train(yml, launcher='torchrun')
    assert proc.returncode == 0, out[-4000:]
    log = read_log(name)
    assert 'World size (gpu number): 2' in log
    assert sorted(losses(log)) == [1, 2]
    assert log.count('Validation tinyval') >= 1 and '# psnr:' in log
    assert osp.isfile(osp.join(ROOT, 'experiments', name, 'models', 'net_g_2.pth'))


def test_demo_kernels_are_the_true_convolution_kernels():
    """make_demo_dataset's blur = 'valid' convolution of the sharp tile with the saved kernel (noise off), so the
    kernels can serve as ground truth for kernel-correlation checks."""
    sys.path.insert(0, osp.join(ROOT, 'scripts'))
    from make_demo_dataset import KERNEL_SIZE, blur_tile, motion_kernel
    k = motion_kernel(9.0, np.deg2rad(45))
    assert k.shape == (KERNEL_SIZE, KERNEL_SIZE) and abs(k.sum() - 1) < 1e-6 and (k >= 0).all()
    assert np.allclose(k, k[::-1, ::-1], atol=1e-6)  # a centred segment is point-symmetric
    horiz = motion_kernel(5.0, 0.0)
    c = KERNEL_SIZE // 2
    assert np.allclose(horiz[c, c - 2:c + 3], 0.2, atol=0.03) and horiz.sum(0)[c - 3:c + 4].sum() > 0.99
    rng = np.random.default_rng(0)
    img = rng.random((60, 70, 3)).astype(np.float32)
    k = motion_kernel(7.0, 0.3)
    m = c
    blur, sharp = blur_tile(img, m + 2, m + 3, (24, 32), k, 0.0, rng)
    region = img[2:2 + 24 + 2 * m, 3:3 + 32 + 2 * m].astype(np.float64)
    ref = np.zeros((24, 32, 3))
    for dy in range(KERNEL_SIZE):  # direct 'valid' convolution: out(y, x) = sum k(i, j) img(y + m - i, x + m - j)
        for dx in range(KERNEL_SIZE):
            ref += k[dy, dx] * region[2 * m - dy:2 * m - dy + 24, 2 * m - dx:2 * m - dx + 32]
    assert np.abs(blur.astype(np.float64) - np.round(np.clip(ref, 0, 1) * 255)).max() <= 1
    assert np.array_equal(sharp, np.round(img[m + 2:m + 26, m + 3:m + 35] * 255).astype(np.uint8))


def test_demo_iterations_fit_the_whole_job_budget():
    """run_demo gives the training steps 90 % of what is left of the budget after the time already spent and a
    45 s reserve; a budget already spent still trains 100 iterations, and the count is capped."""
    sys.path.insert(0, osp.join(ROOT, 'scripts'))
    from run_demo import fit_iterations
    assert fit_iterations(14 * 60, 30.0, 0.21) == int(0.9 * (840 - 30 - 45) / 0.21)  # 3278
    assert fit_iterations(60, 50.0, 0.5) == 100
    assert fit_iterations(10 ** 6, 0.0, 0.01) == 20000
