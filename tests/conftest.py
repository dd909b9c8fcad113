"""Shared test fixtures: repo paths, tiny generated paired datasets, launcher runs in a subprocess."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
# The authors' state-dict keys with shapes, and the MATLAB SSIM reference pair, kept in tests/data so the
# checkpoint/metric tests run on a clean clone.
KEYS_DIR = REPO / 'tests' / 'data' / 'official_keys'
MATLAB_PAIR_DIR = REPO / 'tests' / 'data' / 'matlab_ssim_example'

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def write_paired_folder(root: Path, n: int = 4, size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    """Write n smooth random GT images and box-blurred + noisy LQ twins as PNG folders root/{gt,lq}."""
    import cv2
    rng = np.random.default_rng(seed)
    (root / 'gt').mkdir(parents=True, exist_ok=True)
    (root / 'lq').mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(n):
        small = rng.uniform(0, 255, (h // 4 + 1, w // 4 + 1, 3)).astype(np.float32)
        gt = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255)
        lq = cv2.blur(gt, (5, 1)) + rng.normal(0, 2, gt.shape)
        cv2.imwrite(str(root / 'gt' / f'img{i:03d}.png'), gt.round().astype(np.uint8))
        cv2.imwrite(str(root / 'lq' / f'img{i:03d}.png'), lq.clip(0, 255).round().astype(np.uint8))
    return root


def run_py(args: list[str], cwd: Path = REPO, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the venv's python with args in cwd; returns the completed process (text output)."""
    full_env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    full_env.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=full_env)


@pytest.fixture
def experiment_name(request):
    """A unique experiment name; its experiments/, results/ and tb_logger/ folders are removed afterwards."""
    name = f'pytest_{request.node.name[:40]}_{uuid.uuid4().hex[:6]}'.replace('[', '_').replace(']', '_')
    yield name
    for top in ('experiments', 'results', 'tb_logger'):
        for path in (REPO / top).glob(f'{name}*'):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def paired_data(tmp_path):
    return write_paired_folder(tmp_path / 'data')


@pytest.fixture(autouse=True)
def _grad_mode_is_restored():
    """A test (or the code it calls in-process) must not leave autograd switched off for the tests after it."""
    yield
    enabled = torch.is_grad_enabled()
    torch.set_grad_enabled(True)
    assert enabled, 'autograd was left disabled (torch.set_grad_enabled(False) without restore)'


@pytest.fixture
def names():
    """Run names a test appends to; their experiments/, results/ and tb_logger/ folders are removed afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        for top in ('experiments', 'results', 'tb_logger'):
            for path in (REPO / top).glob(name + '*'):
                shutil.rmtree(path, ignore_errors=True)
