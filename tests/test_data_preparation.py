"""Every preparation script runs on its generated miniature layout, pairs by stem, is resumable, and refuses a
malformed layout with a readable error naming what was expected (datasets/README.md, docs/evaluation.md)."""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fixtures import datasets as fx

ROOT = Path(__file__).resolve().parents[1]
PREP = ROOT / 'scripts' / 'data_preparation'


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f'prep_{name}', PREP / f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv('FKE_PREP_QUIET', '1')


def _mtimes(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob('*') if p.is_file()}


def test_gopro_pairs_flattens_crops_lmdb_and_resumes(tmp_path):
    src = fx.make_gopro(tmp_path / 'raw')
    mod = _load('prepare_gopro')
    dst = tmp_path / 'out'
    assert mod.main(['--src', str(src), '--dst', str(dst), '--crop-size', '16', '--crop-step', '12', '--lmdb']) == 0
    test_blur = sorted(p.name for p in (dst / 'GoPro/test/blur').iterdir())
    assert test_blur == ['GOPR0384_11_00-000001.png', 'GOPR0384_11_00-000002.png',
                         'GOPR0385_11_01-000001.png', 'GOPR0385_11_01-000002.png']
    # the sharp frame of a pair is the file of the same sequence and frame, not the blur_gamma decoy
    a = cv2.imread(str(src / 'test/GOPR0385_11_01/blur/000002.png'))
    assert np.array_equal(cv2.imread(str(dst / 'GoPro/test/blur/GOPR0385_11_01-000002.png')), a)
    b = cv2.imread(str(src / 'test/GOPR0385_11_01/sharp/000002.png'))
    assert np.array_equal(cv2.imread(str(dst / 'GoPro/test/sharp/GOPR0385_11_01-000002.png')), b)
    # 40×48 frames, 16² crops every 12 px (last snapped): rows {0,12,24}, cols {0,12,24,32} -> 12 crops per frame
    crops = sorted((dst / 'GoPro/train_crops/blur').glob('GOPR0372_07_00-000001_s*.png'))
    assert len(crops) == 12
    frame = cv2.imread(str(src / 'train/GOPR0372_07_00/blur/000001.png'))
    assert np.array_equal(cv2.imread(str(crops[-1])), frame[24:40, 32:48])
    meta = (dst / 'GoPro/train_crops/sharp.lmdb/meta_info.txt').read_text().split('\n')
    assert meta[0] == 'GOPR0372_07_00-000001_s001.png (16,16,3) 1' and len([m for m in meta if m]) == 5 * 12
    import lmdb
    env = lmdb.open(str(dst / 'GoPro/train_crops/sharp.lmdb'), readonly=True, lock=False)
    with env.begin() as txn:
        buf = txn.get(b'GOPR0374_11_00-000002_s003')
    crop = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(crop, cv2.imread(str(src / 'train/GOPR0374_11_00/sharp/000002.png'))[0:16, 24:40])
    # re-running rewrites nothing
    before = _mtimes(dst)
    assert mod.main(['--src', str(src), '--dst', str(dst), '--crop-size', '16', '--crop-step', '12', '--lmdb']) == 0
    assert _mtimes(dst) == before


def test_gopro_refuses_missing_sharp_and_unpaired_frames(tmp_path, capsys):
    src = fx.make_gopro(tmp_path / 'raw')
    mod = _load('prepare_gopro')
    (src / 'test/GOPR0384_11_00/sharp/000002.png').unlink()
    with pytest.raises(ValueError, match=r'test/GOPR0384_11_00.*1 input\(s\) without a target.*000002'):
        mod.main(['--src', str(src), '--dst', str(tmp_path / 'o')])
    shutil.rmtree(src / 'test/GOPR0384_11_00/sharp')
    with pytest.raises(ValueError, match=r'expected the sharp/ folder of sequence GOPR0384_11_00'):
        mod.main(['--src', str(src), '--dst', str(tmp_path / 'o')])
    assert mod.run_cli(lambda: mod.main(['--src', str(tmp_path / 'nowhere'), '--dst', str(tmp_path / 'o')])) == 2
    assert 'expected the GoPro train/ folder of GOPRO_Large' in capsys.readouterr().err


def test_hide_pools_subsets_and_finds_gt_by_name(tmp_path):
    src = fx.make_hide(tmp_path / 'raw')
    mod = _load('prepare_hide')
    dst = tmp_path / 'out'
    assert mod.main(['--src', str(src), '--dst', str(dst)]) == 0
    names = sorted(p.name for p in (dst / 'HIDE/test/sharp').iterdir())
    assert names == ['10fromGOPR1096.png', '1fromGOPR0001.png', '6fromGOPR0950.png']  # train/ not included
    assert np.array_equal(cv2.imread(str(dst / 'HIDE/test/sharp/1fromGOPR0001.png')),
                          cv2.imread(str(src / 'GT/1fromGOPR0001.png')))
    (src / 'GT/6fromGOPR0950.png').unlink()
    with pytest.raises(ValueError, match=r'no GT/<same name>.*6fromGOPR0950'):
        mod.main(['--src', str(src), '--dst', str(dst)])


def test_realblur_follows_lists_and_scene244_reflect(tmp_path):
    src = fx.make_realblur(tmp_path / 'raw')
    mod = _load('prepare_realblur')
    dst = tmp_path / 'out'
    assert mod.main(['--src', str(src), '--dst', str(dst), '--lmdb']) == 0
    for subset, folder in fx.REALBLUR_DIRS.items():
        out = dst / f'RealBlur_{subset}'
        assert sorted(p.name for p in (out / 'test/blur').iterdir()) == ['scene003_1.png', 'scene244_5.png']
        assert np.array_equal(cv2.imread(str(out / 'test/sharp/scene244_5.png')),
                              cv2.imread(str(src / folder / 'scene244_reflect/gt/gt_5.png')))
        assert (out / 'train_sharp.lmdb/meta_info.txt').read_text().startswith('scene001_1.png (44,36,3)')
    before = _mtimes(dst)
    mod.main(['--src', str(src), '--dst', str(dst), '--lmdb'])
    assert _mtimes(dst) == before
    lst = src / 'RealBlur_J_test_list.txt'
    lines = lst.read_text().split('\n')
    gt, blur = lines[0].split()
    lst.write_text('\n'.join([f'{blur} {gt}'] + lines[1:]))  # blur first: the wrong order
    with pytest.raises(ValueError, match=r'RealBlur_J_test_list.txt:1: expected .*\(GT first\)'):
        mod.main(['--src', str(src), '--dst', str(dst)])
    lst.unlink()
    with pytest.raises(ValueError, match=r'expected the official list file RealBlur_J_test_list.txt'):
        mod.main(['--src', str(src), '--dst', str(dst)])


def test_reds_val300_takes_frames_ending_in_9(tmp_path):
    src = fx.make_reds(tmp_path / 'raw')
    mod = _load('prepare_reds')
    dst = tmp_path / 'out'
    assert mod.main(['--src', str(src), '--dst', str(dst), '--train', '--lmdb']) == 0
    names = sorted(p.name for p in (dst / 'REDS/val300/blur').iterdir())
    assert names == ['000_00000009.png', '000_00000019.png', '001_00000009.png', '001_00000019.png']
    assert sorted(p.name for p in (dst / 'REDS/val300/sharp').iterdir()) == names
    # the PNG input holds exactly OpenCV's decoding of the JPEG
    jpg = cv2.imread(str(src / 'val/val_blur_jpeg/001/00000019.jpg'))
    assert np.array_equal(cv2.imread(str(dst / 'REDS/val300/blur/001_00000019.png')), jpg)
    assert len(list((dst / 'REDS/train/blur').iterdir())) == 20
    assert (dst / 'REDS/train_blur.lmdb/data.mdb').exists()
    (src / 'val/val_sharp/001/00000019.png').unlink()
    with pytest.raises(ValueError, match=r'val clip 001.*input\(s\) without a target.*00000019'):
        mod.main(['--src', str(src), '--dst', str(dst)])


def test_dpdd_8bit_high_byte_and_indoor_outdoor_lists(tmp_path):
    src, labels = fx.make_dpdd(tmp_path / 'raw')
    mod = _load('prepare_dpdd')
    dst = tmp_path / 'out'
    assert mod.main(['--src', str(src), '--dst', str(dst), '--labels', str(labels)]) == 0
    v16 = cv2.imread(str(src / 'test_c/source/1P0A_10.png'), cv2.IMREAD_UNCHANGED)
    v8 = cv2.imread(str(dst / 'DPDD/test/inputC/1P0A_10.png'), cv2.IMREAD_UNCHANGED)
    assert v16.dtype == np.uint16 and v8.dtype == np.uint8
    assert np.array_equal(v8, (v16 // 256).astype(np.uint8))
    assert np.array_equal(v8, cv2.imread(str(src / 'test_c/source/1P0A_10.png')))  # == OpenCV's colour read
    # labels are 1-based over the natural order 1,2,3,10,11 (not the character order 1,10,11,2,3)
    assert (dst / 'DPDD/test/indoor.txt').read_text().split() == ['1P0A_1', '1P0A_3']
    assert (dst / 'DPDD/test/outdoor.txt').read_text().split() == ['1P0A_2', '1P0A_10', '1P0A_11']
    assert len(list((dst / 'DPDD/train/target').iterdir())) == 2
    np.save(labels / 'outdoor_labels.npy', np.array([2, 4, 6]))
    with pytest.raises(ValueError, match=r'expected 1\.\.5 \(1-based\)'):
        mod.main(['--src', str(src), '--dst', str(dst), '--labels', str(labels)])
    shutil.rmtree(src / 'val_c/target')
    with pytest.raises(ValueError, match=r'expected DPDD val_c/target \(all-in-focus images\)'):
        mod.main(['--src', str(src), '--dst', str(dst)])


def test_pairing_is_by_stem_not_sort_order(tmp_path):
    sys.path.insert(0, str(PREP))
    from prep_common import LayoutError, pair_by_stem
    a = {'b': Path('in/b.png'), 'a': Path('in/a.png')}
    t = {'a': Path('gt/a.png'), 'b': Path('gt/b.png')}
    assert pair_by_stem(a, t, 'x') == [('a', Path('in/a.png'), Path('gt/a.png')), ('b', Path('in/b.png'),
                                                                                    Path('gt/b.png'))]
    with pytest.raises(LayoutError, match=r"1 target\(s\) without an input, e.g. \['c'\]"):
        pair_by_stem(a, {**t, 'c': Path('gt/c.png')}, 'x')
