"""scripts/reproduce_tables.py end to end on the generated miniature datasets with a tiny DeepRFTv2 checkpoint:
every requested table is written as Markdown and CSV with the paper's value and the difference (issue [eval])."""
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
        'fke_width': 8, 'num_columns': 1, 'sub_image': False}


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
    tiled = {**TINY, 'sub_image': True, 'sub_image_size': 32, 'overlap_size': 16}  # GoPro/REDS protocol: tiling
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
