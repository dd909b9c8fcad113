"""Hostile and clumsy inputs against every command line: exit code, a one-line answer, nothing created or lost.

Classes (docs/reliability.md): planted code in every weights/state loading path, bad options, bad data, bad
weights, bad CLI arguments, inputs that would be overwritten, permissions (umask), partial files, Ctrl-C, the
repository's basicsr/ folder without BasicSR installed. Subprocesses run concurrently in small batches (each
pays a 3-5 s import); cheap variants of one class are checked in-process against the same function.
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
PREFIX = f'pytest_rel_{os.getpid()}'
TINY_NET = {'type': 'DeepRFTv2', 'variant': 'S', 'num_columns': 1, 'width': 8, 'enc_blocks': [1, 1, 1],
            'dec_blocks': [1, 1, 1], 'fke_width': 8, 'fke_levels': 1}
TINY_SETS = [a for k, v in TINY_NET.items() if k not in ('type', 'variant') for a in ('--set', f'{k}={json.dumps(v)}')]


class Payload:
    """Unpickling this runs `touch <marker>`: the file a safe loader must never let execute."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def plant(path, marker, wrap=lambda p: {'params': p}):
    torch.save(wrap(Payload(marker)), str(path))
    return str(path)


def run_all(cmds, timeout=300):
    """Run [argv, ...] concurrently (two at a time); returns [(returncode, stdout, stderr)]."""
    results, running = [None] * len(cmds), []
    pending = list(enumerate(cmds))
    while pending or running:
        while pending and len(running) < 2:
            i, argv = pending.pop(0)
            p = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            running.append((i, p))
        i, p = running.pop(0)
        out, err = p.communicate(timeout=timeout)
        results[i] = (p.returncode, out, err)
    return results


def call(main, argv, capsys):
    """Run a CLI's main(argv) in this process; returns (exit code, stderr)."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def _script(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'_rel_{name}', osp.join(ROOT, 'scripts', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file runs
    spec.loader.exec_module(mod)
    return mod


def one_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and 'Traceback' not in err, err[-2000:]
    return lines[0]


def sha(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def write_pairs(folder, n=2, size=24, seed=0):
    import cv2
    rng = np.random.default_rng(seed)
    for sub in ('sharp', 'blur'):
        os.makedirs(osp.join(folder, sub), exist_ok=True)
    for i in range(n):
        img = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        cv2.imwrite(osp.join(folder, 'sharp', f'{i:03d}.png'), img)
        cv2.imwrite(osp.join(folder, 'blur', f'{i:03d}.png'), img)


def train_opt(data, name, over=None, **kw):
    opt = {
        'name': name, 'model_type': 'DeblurModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 1,
        'datasets': {'train': {
            'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': str(data / 'sharp'),
            'dataroot_lq': str(data / 'blur'), 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
            'gt_size': 16, 'use_hflip': True, 'use_rot': True, 'use_shuffle': True, 'num_worker_per_gpu': 0,
            'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None}},
        'network_g': dict(TINY_NET),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'optim_g': {'type': 'AdamW', 'lr': 1e-3}, 'scheduler': {'type': 'CosineAnnealingLR', 'T_max': 2},
                  'total_iter': 2, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False},
    }
    for key, value in {**(over or {}), **kw}.items():
        node, *path = key.split('.')
        target = opt
        for part in [node, *path][:-1]:
            target = target[part]
        if value is KeyError:
            target.pop([node, *path][-1])
        else:
            target[[node, *path][-1]] = value
    return opt


def write_yml(tmp_path, opt, tag):
    path = tmp_path / f'{tag}.yml'
    path.write_text(yaml.safe_dump(opt))
    return str(path)


def test_options_mistakes():
    from fke_basicsr.options import OptionsError, validate_options
    expected = {
        ('network_g.widht', 8): 'did you mean `width`',
        ('datasets.train.batch_size_per_gpu', 'eight'): 'batch_size_per_gpu` must be a positive int',
        ('train.total_iter', '20'): 'remove the quotes',
        ('datasets.train.gt_sise', 64): 'Did you mean: gt_size',
        ('datasets.train.batch_size_per_gpu', 0): 'batch_size_per_gpu` must be >= 1',
        ('datasets.train.gt_size', 20): 'multiple of 8',
        ('num_gpu', 64): 'GPU(s) are present',
        ('name', KeyError): 'missing required key `name`',
        ('num_gpu', KeyError): 'missing required key `num_gpu`',
        ('network_g.width', 'wide'): 'must be int or None',
        ('logger.print_freq', 0): 'print_freq` must be >= 1',
    }
    data = ROOT  # folders are checked after the keys; these mistakes are found first
    for (key, value), words in expected.items():
        opt = train_opt(__import__('pathlib').Path(data), 'x', over={key: value})
        opt['datasets']['train'].update(dataroot_gt=None, dataroot_lq=None)
        with pytest.raises(OptionsError) as info:
            validate_options(opt, True, 'x.yml')
        assert words in str(info.value) and '\n' not in str(info.value), (key, str(info.value))


def test_data_mistakes(tmp_path):
    import cv2
    from fke_basicsr.data.checks import DataError, check_dataset_files
    write_pairs(tmp_path / 'ok')
    base = {'type': 'PairedImageDataset', 'dataroot_gt': str(tmp_path / 'ok' / 'sharp'),
            'dataroot_lq': str(tmp_path / 'ok' / 'blur'), 'io_backend': {'type': 'disk'}, 'filename_tmpl': '{}'}
    check_dataset_files('train', base)  # a good pair of folders passes
    os.makedirs(tmp_path / 'empty')
    (tmp_path / 'odd' / 'blur').mkdir(parents=True)
    shutil.copytree(tmp_path / 'ok' / 'sharp', tmp_path / 'odd' / 'sharp')
    cv2.imwrite(str(tmp_path / 'odd' / 'blur' / '000.png'), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'odd' / 'blur' / 'x01.png'), np.zeros((8, 8, 3), np.uint8))
    cases = [({'dataroot_lq': str(tmp_path / 'empty')}, 'holds no images'),
             ({'dataroot_lq': str(tmp_path / 'odd' / 'blur')}, f"{tmp_path / 'odd' / 'blur' / '001.png'}"),
             ({'io_backend': {'type': 'lmdb'}}, 'not an lmdb database')]
    for change, words in cases:
        with pytest.raises(DataError) as info:
            check_dataset_files('train', {**base, **change})
        assert words in str(info.value), str(info.value)


def test_loading_paths_refuse_planted_code(tmp_path, capsys):
    """weights, pretrain_network_g (train and test), resume_state, auto-resume, reproduce_tables --ckpt.

    One through a subprocess (train.py with a planted resume_state), the rest through the same entry points in
    this process (the same code after the interpreter start).
    """
    from fke_basicsr import infer
    from fke_basicsr.launch import run
    marker = tmp_path / 'PAYLOAD_RAN'
    data = tmp_path / 'data'
    write_pairs(data)
    bad = plant(tmp_path / 'bad.pth', marker)
    bad_state = plant(tmp_path / 'bad.state', marker, wrap=lambda p: {'iter': 2, 'epoch': 0, 'optimizers': [p]})
    names = [f'{PREFIX}_{k}' for k in ('pre', 'res', 'auto', 'test')]
    auto_dir = osp.join(ROOT, 'experiments', names[2], 'training_states')
    os.makedirs(auto_dir)
    shutil.copy(bad_state, osp.join(auto_dir, '4.state'))
    test_opt = train_opt(data, names[3], **{'path.pretrain_network_g': bad})
    test_opt['datasets'] = {'test': {'name': 't', 'type': 'PairedImageDataset', 'dataroot_gt': str(data / 'sharp'),
                                     'dataroot_lq': str(data / 'blur'), 'io_backend': {'type': 'disk'}}}
    test_opt.pop('train')
    img = tmp_path / 'in.png'
    __import__('cv2').imwrite(str(img), np.zeros((16, 16, 3), np.uint8))
    infer_argv = ['-i', str(img), '-o', str(tmp_path / 'out'), '--arch', 'DeepRFTv2', '--variant', 'S', *TINY_SETS,
                  '--weights', bad]
    res_yml = write_yml(tmp_path, train_opt(data, names[1], **{'path.resume_state': bad_state}), 'res')
    try:
        procs = run_all([[osp.join('basicsr', 'train.py'), '-opt', res_yml]])
        answers = [(rc, err) for rc, _, err in procs]
        answers.append(call(_script('reproduce_tables').main, ['--data-root', str(tmp_path), '--ckpt', f'gopro={bad}',
                                                                '--out', str(tmp_path / 'tables')], capsys))
        pre_yml = write_yml(tmp_path, train_opt(data, names[0], **{'path.pretrain_network_g': bad}), 'pre')
        answers.append(call(lambda a: run('train', a, ROOT), ['-opt', pre_yml], capsys))
        auto_yml = write_yml(tmp_path, train_opt(data, names[2]), 'auto')
        answers.append(call(lambda a: run('train', a, ROOT), ['-opt', auto_yml, '--auto_resume'], capsys))
        answers.append(call(lambda a: run('test', a, ROOT), ['-opt', write_yml(tmp_path, test_opt, 'test')], capsys))
        answers.append(call(infer.main, infer_argv, capsys))
        for i, (rc, err) in enumerate(answers):
            line = one_line(err)
            assert rc == 2 and 'refused and nothing from it ran' in line and 'posix.system' in line, (i, line)
        assert not marker.exists()
        for n in (names[0], names[1], names[3]):
            assert not osp.exists(osp.join(ROOT, 'experiments', n)) and not osp.exists(osp.join(ROOT, 'results', n))
        assert sorted(os.listdir(auto_dir)) == ['4.state'] and not (tmp_path / 'out').exists()
        assert not (tmp_path / 'tables').exists()
    finally:
        for n in names:
            shutil.rmtree(osp.join(ROOT, 'experiments', n), ignore_errors=True)
            shutil.rmtree(osp.join(ROOT, 'results', n), ignore_errors=True)


def test_cli_mistakes_and_nothing_lost(tmp_path, capsys):
    import cv2
    from fke_basicsr import infer, profile
    photos = tmp_path / 'photos'
    photos.mkdir()
    a = photos / 'a.png'
    cv2.imwrite(str(a), (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    (tmp_path / 'link').symlink_to(photos)
    a_sum, a_mode = sha(a), os.stat(a).st_mode
    afile = tmp_path / 'afile.txt'
    afile.write_text('keep me')
    demo_out = tmp_path / 'foreign'
    demo_out.mkdir()
    (demo_out / 'mine.txt').write_text('mine')
    net = ['--arch', 'DeepRFTv2', '--variant', 'S', *TINY_SETS]
    inp = ['-i', str(a)]
    tables, demo = _script('reproduce_tables').main, _script('make_demo_dataset').main
    cwd = os.getcwd()
    os.chdir(tmp_path)  # for the relative spellings
    try:
        cases = {
            'overwrite': (infer.main, [*inp, '-o', str(photos), *net], 'would overwrite the input'),
            'overwrite_dot': (infer.main, ['-i', 'photos/a.png', '-o', './photos/', *net], 'would overwrite the input'),
            'overwrite_link': (infer.main, ['-i', str(a), '-o', 'link', *net], 'would overwrite the input'),
            'overwrite_dir': (infer.main, ['-i', 'link', '-o', str(photos), *net], 'must differ from the input folder'),
            'threads': (infer.main, [*inp, '-o', 'o1', *net, '--threads', '-1'], '--threads: expected an integer >= 1'),
            'tile_batch': (infer.main, [*inp, '-o', 'o2', *net, '--tile-batch', '0'], '--tile-batch: expected'),
            'scale': (infer.main, [*inp, '-o', 'o3', *net, '--scale', '0'], '--scale: expected an integer >= 1'),
            'tile': (infer.main, [*inp, '-o', 'o4', *net, '--tile', '-8'], '--tile: expected an integer >= 0'),
            'device': (infer.main, [*inp, '-o', 'o5', *net, '--device', 'gpu'], '--device: expected cpu, cuda'),
            'sha': (infer.main, [*inp, '-o', 'o6', *net, '--sha256', 'abc'], '--sha256: expected 64'),
            'out_file': (infer.main, [*inp, '-o', str(afile), *net], 'is a file'),
            'no_input': (infer.main, ['-i', 'nowhere.png', '-o', 'o7', *net], 'does not exist'),
            'profile_json': (profile.main, ['--arch', 'DeepRFTv2', '--variant', 'S', '--size', '16', '16', '--json',
                                            str(tmp_path)], '--json'),
            'profile_threads': (profile.main, ['--arch', 'DeepRFTv2', '--size', '16', '16', '--threads', '0'],
                                '--threads'),
            'demo_file': (demo, ['--out', str(afile)], 'is a file'),
            'demo_foreign': (demo, ['--out', str(demo_out)], 'not a Demo dataset'),
            'tables_nothing': (tables, ['--data-root', str(tmp_path), '--out', str(tmp_path / 't')], 'nothing to do'),
            'tables_root': (tables, ['--data-root', str(tmp_path / 'nowhere'), '--ckpt', f'gopro={afile}'],
                            'is not a folder'),
            'tables_limit': (tables, ['--data-root', str(tmp_path), '--limit', '0'], '--limit'),
        }
        for key, (main, argv, words) in cases.items():
            code, err = call(main, argv, capsys)
            line = one_line(err)
            assert code == 2 and words in line, (key, line)
    finally:
        os.chdir(cwd)
    # and once through a real process: the overwrite refusal, exit code 2
    (rc, _, err), = run_all([['-m', 'fke_basicsr.infer', '-i', str(a), '-o', str(tmp_path / 'link'), *net]])
    assert rc == 2 and 'would overwrite the input' in one_line(err)
    assert sha(a) == a_sum and os.stat(a).st_mode == a_mode and sorted(os.listdir(photos)) == ['a.png']
    assert afile.read_text() == 'keep me' and sorted(os.listdir(demo_out)) == ['mine.txt']
    assert sorted(os.listdir(tmp_path)) == sorted(['photos', 'link', 'afile.txt', 'foreign'])  # nothing created


def test_infer_umask_float_tiff_and_ctrl_c(tmp_path):
    import cv2
    src = tmp_path / 'in'
    src.mkdir()
    hdr = np.full((16, 16, 3), 0.5, np.float32)
    hdr[0, 0] = 3.0
    cv2.imwrite(str(src / 'hdr.tif'), hdr)
    out = tmp_path / 'out'
    out.mkdir()
    stale = out / f'.hdr.tif.{2 ** 22 + 12345}.tmp'  # left by a killed write (no such process)
    stale.write_bytes(b'partial')
    mine = out / '.notes.tmp'
    mine.write_text('a user file that merely ends in .tmp')
    argv = ['-m', 'fke_basicsr.infer', '-i', str(src), '-o', str(out), '--arch', 'DeepRFTv2', '--variant', 'S',
            *TINY_SETS, '--tile', '0', '--quiet']
    big = tmp_path / 'big'
    big.mkdir()
    cv2.imwrite(str(big / 'x.png'), np.zeros((256, 256, 3), np.uint8))
    for i in range(1, 40):
        os.link(big / 'x.png', big / f'x{i:02d}.png')
    slow = ['-m', 'fke_basicsr.infer', '-i', str(big), '-o', str(tmp_path / 'bigout'), '--arch', 'DeepRFTv2',
            '--variant', 'S', '--tile', '0', '--quiet']
    proc = subprocess.Popen(['/bin/sh', '-c', 'umask 027 && exec "$0" "$@"', sys.executable, *argv], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ctrl_c = subprocess.Popen([sys.executable, *slow], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    so, se = proc.communicate(timeout=300)
    assert proc.returncode == 0, se[-2000:]
    assert 'clipped to [0, 1]' in se and 'hdr.tif' in se and '3' in se
    assert os.stat(out / 'hdr.tif').st_mode & 0o777 == 0o640  # umask 027, not mkstemp's 0600
    assert not stale.exists() and mine.exists()
    # Ctrl-C while the model runs: one line, exit 130, no partial file
    deadline = time.time() + 120
    while not (tmp_path / 'bigout').exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    ctrl_c.send_signal(signal.SIGINT)
    _, err = ctrl_c.communicate(timeout=120)
    assert ctrl_c.returncode == 130 and 'interrupted' in one_line(err.split('image(s) ->')[-1]), err[-1500:]
    assert not [f for f in os.listdir(tmp_path / 'bigout') if f.endswith('.tmp')]


def test_truncated_state_is_skipped_and_writes_respect_umask(tmp_path, capsys):
    from fke_basicsr.io_utils import atomic_write, remove_stale_tmp
    from fke_basicsr.launch import load_resume_state
    states = tmp_path / 'experiments' / 'run' / 'training_states'
    states.mkdir(parents=True)
    torch.save({'iter': 4, 'epoch': 1, 'optimizers': [], 'schedulers': []}, str(states / '4.state'))
    torch.save({'iter': 8, 'epoch': 2, 'optimizers': [], 'schedulers': []}, str(states / '8.state'))
    blob = (states / '8.state').read_bytes()
    (states / '8.state').write_bytes(blob[:len(blob) // 2])  # a save killed half-way
    opt = {'auto_resume': True, 'root_path': str(tmp_path), 'name': 'run', 'network_g': {},
           'path': {'resume_state': None, 'models': str(tmp_path / 'models')}}
    state = load_resume_state(opt)
    assert state['iter'] == 4 and opt['path']['resume_state'].endswith('4.state')
    warn = capsys.readouterr().err
    assert '8.state' in warn and 'Skipping' in warn
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / 'f.bin', lambda f: f.write(b'x'))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / 'f.bin').st_mode & 0o777 == 0o600
    atomic_write(tmp_path / 'g.bin', lambda f: f.write(b'y'))
    assert os.stat(tmp_path / 'g.bin').st_mode & 0o777 == 0o666 & ~old
    (tmp_path / f'.h.bin.{os.getpid()}.tmp').write_bytes(b'')
    assert [p.name for p in remove_stale_tmp([tmp_path])] == [f'.h.bin.{os.getpid()}.tmp']


def test_demo_dataset_with_deleted_files_is_not_complete(tmp_path, capsys):
    sys.path.insert(0, osp.join(ROOT, 'scripts'))
    import make_demo_dataset as mdd
    out = tmp_path / 'Demo'
    for split, n in (('train', 2), ('val', 1)):
        for sub in ('blur', 'sharp'):
            (out / split / sub).mkdir(parents=True)
            for i in range(n):
                (out / split / sub / f'{i}.png').write_bytes(b'')
    meta = {'seed': 0, 'lengths': list(mdd.LENGTHS), 'noise_sigma': list(mdd.NOISE_SIGMA), 'train': 2, 'val': 1,
            'lmdb': False}
    (out / mdd.DONE_MARKER).write_text(json.dumps(meta))
    assert mdd.is_complete(str(out))
    (out / 'train' / 'blur' / '1.png').unlink()
    assert not mdd.is_complete(str(out))
    assert 'incomplete' in capsys.readouterr().out


def test_launcher_without_basicsr_installed():
    proc = subprocess.run([sys.executable, '-S', osp.join('basicsr', 'train.py'), '-opt', 'x.yml'], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and 'pip install basicsr==1.4.2' in one_line(proc.stderr)


def test_bad_data_and_weights_through_the_launchers(tmp_path, capsys):
    """A corrupt training image is named; a network/weights mismatch in test.py is the short report."""
    data = tmp_path / 'data'
    write_pairs(data, n=2)
    (data / 'sharp' / '001.png').write_bytes(b'not a png')
    other = dict(TINY_NET, width=16)
    from basicsr.archs import build_network
    import fke_basicsr  # noqa: F401
    wide = tmp_path / 'wide.pth'
    torch.save({'params': build_network(dict(other)).state_dict()}, str(wide))
    names = [f'{PREFIX}_corrupt', f'{PREFIX}_mismatch', f'{PREFIX}_nofile']
    test_opt = train_opt(data, names[1], **{'path.pretrain_network_g': str(wide)})
    test_opt['datasets'] = {'test': {'name': 't', 'type': 'PairedImageDataset', 'dataroot_gt': str(data / 'sharp'),
                                     'dataroot_lq': str(data / 'blur'), 'io_backend': {'type': 'disk'}}}
    test_opt.pop('train')
    missing = dict(test_opt, name=names[2], path={'pretrain_network_g': str(tmp_path / 'nope.pth')})
    try:
        from fke_basicsr.launch import run
        rc3, e3 = call(lambda a: run('test', a, ROOT), ['-opt', write_yml(tmp_path, missing, 'n')], capsys)
        cmds = [[osp.join('basicsr', 'train.py'), '-opt', write_yml(tmp_path, train_opt(data, names[0]), 'c')],
                [osp.join('basicsr', 'test.py'), '-opt', write_yml(tmp_path, test_opt, 'm')]]
        (rc1, _, e1), (rc2, _, e2) = run_all(cmds)
        last = [ln for ln in e1.splitlines() if ln.strip()][-1]  # after BasicSR's start-up log lines
        assert rc1 == 2 and 'Traceback' not in e1 and str(data / 'sharp' / '001.png') in last and 'corrupt' in last
        report = [ln for ln in e2[e2.index('error:'):].splitlines() if ln.strip()]
        assert rc2 == 2 and 'Traceback' not in e2 and 'shape-mismatched keys' in report[0] and len(report) < 25, e2
        assert rc3 == 2 and 'nope.pth does not exist' in one_line(e3)
        assert not osp.exists(osp.join(ROOT, 'results', names[2]))
    finally:
        for n in names:
            shutil.rmtree(osp.join(ROOT, 'experiments', n), ignore_errors=True)
            shutil.rmtree(osp.join(ROOT, 'results', n), ignore_errors=True)
