"""The authors' and ATD's option layouts (tiny networks, generated data, CPU) run through `basicsr/train.py` and
`basicsr/test.py` unchanged but for dataset paths: converted in memory, the converted YAML and the key report
written beside the run, the progressive schedule applied, validation run."""
import glob
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, osp.dirname(__file__))
import foreign_options as fo  # noqa: E402

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
PREFIX = f'pytest_migrate_{os.getpid()}'


def _write(folder, name, img):
    import cv2
    os.makedirs(folder, exist_ok=True)
    cv2.imwrite(osp.join(folder, name), (np.clip(img, 0, 1) * 255).round().astype(np.uint8))


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    import cv2
    root = tmp_path_factory.mktemp('migrate_data')
    rng = np.random.default_rng(0)
    for split, n, (h, w) in (('train', 2, (32, 32)), ('val', 1, (36, 44))):
        for i in range(n):
            sharp = cv2.resize(rng.random((h // 4, w // 4, 3)).astype(np.float32), (w, h))
            _write(root / split / 'sharp', f'{i:03d}.png', sharp)
            _write(root / split / 'blur', f'{i:03d}.png', cv2.blur(sharp, (5, 1)))
            _write(root / split / 'HR', f'{i:03d}.png', sharp)
            _write(root / split / 'LR', f'{i:03d}x2.png', cv2.resize(sharp, (w // 2, h // 2),
                                                                     interpolation=cv2.INTER_AREA))
    return root



def run(script, yml):
    proc = subprocess.run([sys.executable, f'basicsr/{script}.py', '-opt', str(yml)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    return proc, proc.stdout + proc.stderr


def tiny_atd(**over):
    return fo.authors_atd_net(2, embed_dim=12, depths=[1], num_heads=[2], window_size=8, category_size=32,
                              num_tokens=8, reducted_dim=4, convffn_kernel_size=3, ker_size=8, overlap_size=[2, 2],
                              **over)


def test_authors_deblur_file_trains_with_its_progressive_schedule(tmp_path, data, names):
    name = f'{PREFIX}_gopro'
    names.append(name)
    net = fo.authors_deeprft_net('S', dims=8, enc=(1, 1, 1), dec=(1, 1, 1), size=32, overlap=8, train_size=32)
    net.update(dims_ker=[8, 8, 8], enc_ker_layers=[1], baseblock_enc_ker=['EVSS'])
    opt = fo.authors_deblur_train(str(data / 'train' / 'sharp'), str(data / 'train' / 'blur'),
                                  str(data / 'val' / 'sharp'), str(data / 'val' / 'blur'), net=net, num_gpu=0,
                                  batches=(2, 1), iters=(1, 1), gt_size=32, gt_sizes=(16, 32), total_iter=2, name=name)
    opt['datasets']['train']['num_worker_per_gpu'] = 0
    opt['val']['val_freq'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    yml = tmp_path / 'train-GoPro-DeepRFTv2-tiny.yml'
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    proc, out = run('train', yml)
    assert proc.returncode == 0, out[-4000:]
    assert 'mapped  datasets.train.mini_batch_sizes' in out  # the report is printed
    exp = osp.join(ROOT, 'experiments', name)
    converted = yaml.safe_load(open(osp.join(exp, 'train-GoPro-DeepRFTv2-tiny.converted.yml')))
    assert converted['train']['progressive'] == [{'iters': 1, 'gt_size': 16, 'batch': 2},
                                                 {'iters': 1, 'gt_size': 32, 'batch': 1}]
    assert converted['val']['tile'] == {'size': 32, 'overlap': 8}
    assert osp.isfile(osp.join(exp, 'train-GoPro-DeepRFTv2-tiny.migration.txt'))
    log = '\n'.join(open(p).read() for p in glob.glob(osp.join(exp, 'train_*.log')))
    assert 'progressive stage 1, gt_size 32x32' in log and '# psnr_GoPro:' in log
    assert osp.isfile(osp.join(exp, 'models', 'net_g_2.pth'))


def test_authors_sr_file_trains_and_their_test_file_evaluates(tmp_path, data, names):
    name = f'{PREFIX}_atd'
    names += [name, f'{PREFIX}_atdtest', f'{PREFIX}_atdown']
    opt = fo.authors_atd_train(2, gt=str(data / 'train' / 'HR'), lq=str(data / 'train' / 'LR'),
                               vgt=str(data / 'val' / 'HR'), vlq=str(data / 'val' / 'LR'), net=tiny_atd(), batch=2,
                               lr_patch=8, total_iter=2)
    opt.update(name=name, num_gpu=0)
    opt['datasets']['train']['num_worker_per_gpu'] = 0
    opt['train'].update(warmup_iter=-1, scheduler={'type': 'MultiStepLR', 'milestones': [1], 'gamma': 0.5})
    opt['val']['val_freq'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    yml = tmp_path / '101_ATD_light_SRx2_tiny.yml'
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    proc, out = run('train', yml)
    assert proc.returncode == 0, out[-4000:]
    exp = osp.join(ROOT, 'experiments', name)
    converted = yaml.safe_load(open(osp.join(exp, '101_ATD_light_SRx2_tiny.converted.yml')))
    assert converted['network_g']['fke'] is True and converted['datasets']['train']['gt_size'] == 16
    log = '\n'.join(open(p).read() for p in glob.glob(osp.join(exp, 'train_*.log')))
    assert '# psnr:' in log
    weights = osp.join(exp, 'models', 'net_g_2.pth')
    assert 'params_ema' in torch.load(weights, map_location='cpu', weights_only=True)

    # their test file (ImageCleanModel_infernece, path.param_key, val.save_path, num_gpu 0 here)
    test = fo.authors_atd_test(2, gt=str(data / 'val' / 'HR'), lq=str(data / 'val' / 'LR'), weights=weights,
                               net=tiny_atd(sub_image=True), num_gpu=0)
    test['name'] = f'{PREFIX}_atdtest'
    yml = tmp_path / 'test_ATD_lightSR_x2_tiny.yml'
    yml.write_text(yaml.safe_dump(test, sort_keys=False))
    proc, out = run('test', yml)
    assert proc.returncode == 0, out[-4000:]
    res = osp.join(ROOT, 'results', test['name'])
    assert osp.isfile(osp.join(res, 'test_ATD_lightSR_x2_tiny.converted.yml'))
    log = '\n'.join(open(p).read() for p in glob.glob(osp.join(res, 'test_*.log')))
    assert '# psnr:' in log and 'Loading ATD model from' in log and 'params_ema' in log


def test_atd_own_test_file_runs_with_atdmodel(tmp_path, data, names):
    from fke_basicsr.archs.atd_arch import ATD
    name = f'{PREFIX}_atdown'
    names.append(name)
    opt = fo.atd_own_test(2, gt=str(data / 'val' / 'HR'), lq=str(data / 'val' / 'LR'))
    opt['network_g'].update(embed_dim=12, depths=[1], num_heads=[2], window_size=8, category_size=32, num_tokens=8,
                            reducted_dim=4, convffn_kernel_size=3)
    opt['datasets']['test_1']['filename_tmpl'] = '{}x2'
    net_opt = {k: v for k, v in opt['network_g'].items() if k != 'type'}
    weights = tmp_path / 'atd.pth'
    torch.save({'params_ema': ATD(**net_opt).state_dict()}, weights)
    opt.update(name=name, num_gpu=0)
    opt['path']['pretrain_network_g'] = str(weights)
    yml = tmp_path / '101_ATD_light_SRx2_scratch.yml'
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    proc, out = run('test', yml)
    assert proc.returncode == 0, out[-4000:]
    log = '\n'.join(open(p).read() for p in glob.glob(osp.join(ROOT, 'results', name, 'test_*.log')))
    assert 'Model [ATDModel] is created' in log and '# psnr:' in log
