"""scripts/make_demo_dataset.py: the default (line) dataset is unchanged; --blur shake draws camera-shake kernels."""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

import fke_basicsr  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
# sha256 over (relative path, bytes) of every file the small config below writes, computed with the script as it
# was before --blur existed (same seed, same calls): the default dataset must stay byte-identical.
LINE_SHA256 = 'f5649c5fbf9f0be868141a256559664434e3acc507c201ca922a837783471385'


@pytest.fixture(scope='module')
def mdd():
    spec = importlib.util.spec_from_file_location('make_demo_dataset', REPO / 'scripts' / 'make_demo_dataset.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            h.update(os.path.relpath(p, root).encode())
            with open(p, 'rb') as fh:
                h.update(fh.read())
    return h.hexdigest()


def _small(mdd, out: Path, *kind: str) -> None:
    rng = np.random.default_rng(7)
    mdd.write_split(str(out / 't'), ('astronaut', 'camera'), (128, 128), 64, 3, None, False, rng, *kind)
    mdd.write_split(str(out / 'v'), ('coffee',), (128, 192), 96, None, 2, True, rng, *kind)


def test_default_line_dataset_is_byte_identical(mdd, tmp_path):
    _small(mdd, tmp_path / 'default')
    assert _tree_hash(tmp_path / 'default') == LINE_SHA256
    _small(mdd, tmp_path / 'explicit', 'line')
    assert _tree_hash(tmp_path / 'explicit') == LINE_SHA256


def test_shake_kernels_are_random_walks_up_to_31_px(mdd):
    rng = np.random.default_rng(0)
    extents, straightness = [], []
    for _ in range(40):
        k = mdd.shake_kernel(rng)
        assert k.shape == (33, 33) and k.dtype == np.float32
        assert k.min() >= 0 and k.sum() == pytest.approx(1, abs=1e-5)
        ys, xs = np.nonzero(k > 0)
        extents.append(max(ys.max() - ys.min(), xs.max() - xs.min()))
        # straightness: share of the support's spatial variance along its principal axis (1 for a line)
        w = k[ys, xs]
        pts = np.stack([xs, ys], 1) - np.average(np.stack([xs, ys], 1), axis=0, weights=w)
        ev = np.linalg.eigvalsh((pts * w[:, None]).T @ pts)
        straightness.append(ev[-1] / ev.sum())
    assert 5 <= min(extents) and max(extents) <= 32 and max(extents) >= 25   # 5-31 px paths, 2-px splat
    assert np.median(straightness) < 0.97                                    # curved paths, not lines
    a, b = mdd.shake_kernel(np.random.default_rng(5)), mdd.shake_kernel(np.random.default_rng(5))
    assert np.array_equal(a, b)                                              # deterministic per seed


def test_shake_split_saves_its_kernels_and_blurs_with_them(mdd, tmp_path):
    import cv2
    _small(mdd, tmp_path / 's', 'shake')
    k = np.load(tmp_path / 's' / 'v' / 'kernels' / '0000.npy')
    assert k.shape == (33, 33)
    assert _tree_hash(tmp_path / 's') != LINE_SHA256
    blur = cv2.imread(str(tmp_path / 's' / 'v' / 'blur' / '0000.png')).astype(np.float64)
    sharp = cv2.imread(str(tmp_path / 's' / 'v' / 'sharp' / '0000.png')).astype(np.float64)
    assert blur.shape == sharp.shape == (128, 192, 3)
    # the blurry tile is smoother than the sharp one (less high-frequency energy)
    lap = lambda x: np.abs(cv2.Laplacian(x, cv2.CV_64F)).mean()  # noqa: E731
    assert lap(blur) < 0.7 * lap(sharp)


def test_cli_rejects_an_unknown_blur(mdd, capsys):
    with pytest.raises(SystemExit) as e:
        mdd.main(['--blur', 'gaussian'])
    assert e.value.code == 2
    assert 'shake' in capsys.readouterr().err
