"""Foundation: registration, launcher resolution, toy training/resume/torchrun via the launchers, clear errors."""
from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_py


def toy_options(name: str, data: Path, total_iter: int = 2, save_freq: int = 2, **extra) -> dict:
    """A BasicSR-only options dict (EDSR at scale 1, SRModel) on the generated paired folders."""
    opt = {
        'name': name, 'model_type': 'SRModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 10,
        'datasets': {
            'train': {'name': 'toy', 'type': 'PairedImageDataset', 'dataroot_gt': str(data / 'gt'),
                      'dataroot_lq': str(data / 'lq'), 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
                      'gt_size': 16, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                      'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None},
            'val': {'name': 'toyval', 'type': 'PairedImageDataset', 'dataroot_gt': str(data / 'gt'),
                    'dataroot_lq': str(data / 'lq'), 'io_backend': {'type': 'disk'}},
        },
        'network_g': {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'upscale': 1, 'img_range': 1.0, 'rgb_mean': [0.5, 0.5, 0.5]},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'scheduler': {'type': 'MultiStepLR', 'milestones': [100],
                  'gamma': 0.5}, 'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': save_freq, 'save_img': True, 'suffix': None,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': save_freq, 'use_tb_logger': True},
    }
    opt.update(extra)
    return opt


def write_opt(path: Path, opt: dict) -> Path:
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def test_import_registers_idempotently():
    code = ('import importlib, fke_basicsr, fke_basicsr.losses as l, fke_basicsr.archs as a;'
            'import fke_basicsr;'
            '[importlib.reload(m) for m in l._modules + a._modules];'
            'from fke_basicsr.env import registered_names; print(registered_names())')
    proc = run_py(['-c', code])
    assert proc.returncode == 0, proc.stderr
    assert "'arch'" in proc.stdout


def test_launcher_folder_never_shadows_installed_basicsr():
    assert not (REPO / 'basicsr' / '__init__.py').exists()
    proc = run_py(['-c', 'import fke_basicsr, basicsr, basicsr.train; print(basicsr.__file__); print(basicsr.train.__file__)'])
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.split():
        assert 'site-packages' in line and str(REPO / 'basicsr') not in line


def test_env_report_runs():
    proc = run_py(['-m', 'fke_basicsr.env'])
    assert proc.returncode == 0, proc.stderr
    for key in ('torch', 'basicsr', 'selective_scan[cpu]', 'mamba-ssm', 'registered arch'):
        assert key in proc.stdout


def test_train_two_iterations_then_auto_resume(tmp_path, paired_data, experiment_name):
    yml = write_opt(tmp_path / 'toy.yml', toy_options(experiment_name, paired_data))
    proc = run_py(['basicsr/train.py', '-opt', str(yml)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = REPO / 'experiments' / experiment_name
    assert (exp / 'models' / 'net_g_2.pth').is_file()
    assert (exp / 'training_states' / '2.state').is_file()
    assert list(exp.glob('train_*.log'))
    assert list((REPO / 'tb_logger' / experiment_name).glob('events.*'))
    # Continue to 4 iterations from the saved state, on CPU, through the module entry point.
    write_opt(yml, toy_options(experiment_name, paired_data, total_iter=4))
    proc = run_py(['-m', 'fke_basicsr.train', '-opt', str(yml), '--auto_resume'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = '\n'.join(p.read_text() for p in exp.glob('train_*.log'))
    assert re.search(r'Resuming training from epoch: \d+, iter: 2\.', logs)
    assert (exp / 'models' / 'net_g_4.pth').is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes(tmp_path, paired_data, experiment_name):
    yml = write_opt(tmp_path / 'toy.yml', toy_options(experiment_name, paired_data))
    proc = run_py(['-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(_free_port()),
                   'basicsr/train.py', '-opt', str(yml), '--launcher', 'pytorch', '--dist-backend', 'gloo'])
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    exp = REPO / 'experiments' / experiment_name
    log = '\n'.join(p.read_text() for p in exp.glob('train_*.log'))
    assert 'World size (gpu number): 2' in log
    assert '# psnr:' in log  # validation ran (rank 0)
    assert (exp / 'models' / 'net_g_2.pth').is_file()


@pytest.mark.parametrize('case', ['missing_file', 'bad_yaml', 'unregistered_type', 'missing_dataset',
                                  'unknown_key'])
def test_newcomer_errors_are_one_paragraph(case, tmp_path, paired_data, experiment_name):
    opt = toy_options(experiment_name, paired_data)
    yml = tmp_path / 'opt.yml'
    expect = {'missing_file': 'Options file not found', 'bad_yaml': 'is not valid YAML',
              'unregistered_type': "type 'EDSRR' is not a registered arch", 'missing_dataset': 'does not exist',
              'unknown_key': 'Unknown option `manual_sed`'}[case]
    if case == 'bad_yaml':
        yml.write_text('name: x\n  datasets: [unclosed\n')
    elif case == 'unregistered_type':
        opt['network_g']['type'] = 'EDSRR'
        write_opt(yml, opt)
    elif case == 'missing_dataset':
        opt['datasets']['train']['dataroot_gt'] = str(tmp_path / 'nowhere')
        write_opt(yml, opt)
    elif case == 'unknown_key':
        opt['manual_sed'] = opt.pop('manual_seed')
        write_opt(yml, opt)
    proc = run_py(['basicsr/train.py', '-opt', str(yml)])
    assert proc.returncode == 2
    assert expect in proc.stderr
    assert 'Traceback' not in proc.stderr
    if case == 'unregistered_type':
        assert 'Did you mean: EDSR' in proc.stderr
    if case == 'unknown_key':
        assert 'manual_seed' in proc.stderr
    assert not (REPO / 'experiments' / experiment_name).exists()  # nothing created before the check
