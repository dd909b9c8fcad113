"""scripts/reproduce_tables.py end to end on the generated miniature datasets with a tiny DeepRFTv2 checkpoint:
every requested table is written as Markdown and CSV with the paper's value and the difference."""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import fke_basicsr  # noqa: F401
from fixtures import datasets as fx

ROOT = Path(__file__).resolve().parents[1]
TINY = {'type': 'DeepRFTv2', 'variant': 'S', 'width': 8, 'enc_blocks': [1, 1, 1], 'dec_blocks': [1, 1, 1],
        'fke_width': 8, 'num_columns': 1}


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_tables_1_to_4_on_fixtures(tmp_path, monkeypatch):
    monkeypatch.setenv('FKE_PREP_QUIET', '1')
    torch.set_num_threads(2)
    raw, data = tmp_path / 'raw', tmp_path / 'datasets'
    prep = ROOT / 'scripts' / 'data_preparation'
    _load(prep / 'prepare_gopro.py', 'pg').main(['--src', str(fx.make_gopro(raw)), '--dst', str(data),
                                                 '--crop-size', '0', '--splits', 'test'])
    _load(prep / 'prepare_hide.py', 'ph').main(['--src', str(fx.make_hide(raw)), '--dst', str(data)])
    _load(prep / 'prepare_realblur.py', 'pr').main(['--src', str(fx.make_realblur(raw)), '--dst', str(data),
                                                    '--splits', 'test'])
    _load(prep / 'prepare_reds.py', 'pre').main(['--src', str(fx.make_reds(raw, frames=10, clips=2)),
                                                 '--dst', str(data)])
    src, labels = fx.make_dpdd(raw)
    _load(prep / 'prepare_dpdd.py', 'pd').main(['--src', str(src), '--dst', str(data), '--labels', str(labels),
                                               '--splits', 'test'])

    from basicsr.archs import build_network
    torch.manual_seed(0)
    ckpt = tmp_path / 'tiny.pth'
    torch.save({'params': build_network(dict(TINY)).state_dict()}, ckpt)
    rt = _load(ROOT / 'scripts' / 'reproduce_tables.py', 'reproduce_tables')
    keys = ['gopro', 'realblur_r', 'realblur_j', 'reds', 'dpdd']
    out = tmp_path / 'tables'
    argv = ['--data-root', str(data), '--out', str(out), '--tables', '1,2,3,4,6', '--device', 'cpu',
            '--realblur-pad', '48', '40', '--limit', '3', '--complexity-size', '32']
    tiled = {**TINY, 'val': {'tile': {'size': 32, 'overlap': 16}}}  # GoPro/REDS protocol: tiling
    for k in keys:
        net = tiled if k in ('gopro', 'reds') else TINY
        argv += ['--ckpt', f'{k}={ckpt}', '--net', f'{k}={json.dumps(net)}']
    assert rt.main(argv) == 0

    md = (out / 'tables.md').read_text()
    for n in (1, 2, 3, 4, 6):
        assert f'## Table {n}' in md
    assert 'subset: first 3 images' in md
    assert 'skipped: no --ablation T6' in md
    rows = list(csv.DictReader(open(out / 'all_tables.csv')))
    got = {(r['table'], r['dataset'], r['split'], r['metric']): r for r in rows}
    expected_cells = [('1', 'GoPro', 'test', 'PSNR'), ('1', 'GoPro', 'test', 'SSIM3D'), ('1', 'HIDE', 'test', 'PSNR'),
                      ('1', '-', '-', 'GMACs@32'), ('1', '-', '-', 'ParamsM'),
                      ('3', 'REDS', 'val300', 'PSNR'), ('3', 'REDS', 'val300', 'SSIM3D')]
    expected_cells += [('2', f'RealBlur-{s}', 'test', m) for s in 'RJ'
                       for m in ('PSNR_aligned', 'SSIM_aligned', 'PSNR_raw', 'SSIM_raw')]
    expected_cells += [('4', 'DPDD', sp, m) for sp in ('indoor', 'outdoor', 'combined')
                       for m in ('PSNR', 'SSIM_sk', 'MAE')]
    for key in expected_cells:
        assert key in got, f'missing cell {key}'
        r = got[key]
        assert r['protocol'] and r['value'] not in ('', 'nan')
    # the paper's value and the difference are beside each measured cell of a method the paper reports
    g = got[('1', 'GoPro', 'test', 'PSNR')]
    assert g['method'] == 'DeepRFTv2-S' and g['paper'] == ''  # the paper has no -S GoPro row
    d = got[('4', 'DPDD', 'combined', 'PSNR')]
    assert float(d['paper']) == 26.54
    assert float(d['delta']) == pytest.approx(float(d['value']) - 26.54, abs=1e-9)
    assert int(got[('1', 'GoPro', 'test', 'PSNR')]['n_images']) == 3
    assert int(got[('3', 'REDS', 'val300', 'PSNR')]['n_images']) == 2  # frames 00000009 of the two clips
    # combined DPDD = image-count-weighted mean of indoor (2) and outdoor (1 of the first 3 listed)
    comb = float(got[('4', 'DPDD', 'combined', 'MAE')]['value'])
    i, o = (float(got[('4', 'DPDD', s, 'MAE')]['value']) for s in ('indoor', 'outdoor'))
    ni, no = (int(got[('4', 'DPDD', s, 'MAE')]['n_images']) for s in ('indoor', 'outdoor'))
    assert comb == pytest.approx((ni * i + no * o) / (ni + no), abs=1e-12)
    assert 'tiling 32/16' in md  # the protocol label names the inference mode used
    assert torch.is_grad_enabled()  # main() leaves the caller's grad mode alone
    assert '| Method | Dataset | Split | Metric | Ours | Paper | Δ | n | Protocol |' in md


def test_table5_scores_sr_checkpoints_on_y_with_the_papers_values(tmp_path):
    """Table 5: ATD-light ± FKE on the SR benchmark layout, Y-channel PSNR/SSIM, crop = scale."""
    import cv2
    import numpy as np
    from basicsr.archs import build_network
    from basicsr.metrics import calculate_psnr

    rng = np.random.default_rng(0)
    data = tmp_path / 'datasets'
    for folder in ('Set5', 'Urban100'):
        for i in range(2):
            hr = cv2.resize(rng.uniform(0, 255, (8, 8, 3)).astype(np.float32), (24, 24),
                            interpolation=cv2.INTER_CUBIC).clip(0, 255).round().astype(np.uint8)
            (data / 'SR_benchmarks' / folder / 'HR').mkdir(parents=True, exist_ok=True)
            (data / 'SR_benchmarks' / folder / 'LR_bicubic' / 'X2').mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(data / 'SR_benchmarks' / folder / 'HR' / f'img{i}.png'), hr)
            cv2.imwrite(str(data / 'SR_benchmarks' / folder / 'LR_bicubic' / 'X2' / f'img{i}.png'),
                        cv2.resize(hr, (12, 12), interpolation=cv2.INTER_AREA))
    tiny = {'type': 'ATD', 'upscale': 2, 'embed_dim': 12, 'depths': [1], 'num_heads': [2], 'window_size': 4,
            'category_size': 16, 'num_tokens': 8, 'reducted_dim': 4}
    torch.manual_seed(0)
    net = build_network(dict(tiny)).eval()
    ckpt = tmp_path / 'atd.pth'
    torch.save({'params': net.state_dict()}, ckpt)
    rt = _load(ROOT / 'scripts' / 'reproduce_tables.py', 'reproduce_tables')
    out = tmp_path / 'tables'
    assert rt.main(['--data-root', str(data), '--out', str(out), '--tables', '5', '--device', 'cpu',
                    '--ckpt', f'sr_x2={ckpt}', '--net', f'sr_x2={json.dumps(tiny)}']) == 0
    rows = {(r['dataset'], r['split'], r['metric']): r for r in csv.DictReader(open(out / 'all_tables.csv'))}
    cell = rows[('Urban100', 'x2', 'PSNR_Y')]
    assert cell['method'] == 'ATD-light' and float(cell['paper']) == 33.27 and int(cell['n_images']) == 2
    # the value is BasicSR's Y PSNR (crop border 2) of the uint8 SR output, averaged over the set's images
    ref = []
    for i in range(2):
        lr = cv2.imread(str(data / 'SR_benchmarks' / 'Urban100' / 'LR_bicubic' / 'X2' / f'img{i}.png'))
        x = torch.from_numpy(lr[..., ::-1].transpose(2, 0, 1).copy()).float().div(255)[None]
        with torch.no_grad():
            sr = np.rint(net(x).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)[..., ::-1]
        hr = cv2.imread(str(data / 'SR_benchmarks' / 'Urban100' / 'HR' / f'img{i}.png'))
        ref.append(calculate_psnr(sr, hr, crop_border=2, test_y_channel=True))
    assert float(cell['value']) == pytest.approx(float(np.mean(ref)), abs=1e-6)
    assert 'B100' not in {d for d, _, _ in rows}  # sets that are absent are noted, not scored
