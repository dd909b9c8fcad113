"""PairedPadCropDataset: RealBlur-style zero-pad to [H, W] then a shared random crop."""
from __future__ import annotations

import random

import pytest
import torch

import fke_basicsr  # noqa: F401
from basicsr.data import build_dataset

from conftest import write_paired_folder


def make(root, phase='train', gt_size=(40, 24), **extra):
    opt = {'name': 'pad', 'type': 'PairedPadCropDataset', 'phase': phase, 'scale': 1,
           'dataroot_gt': str(root / 'gt'), 'dataroot_lq': str(root / 'lq'), 'filename_tmpl': '{}',
           'io_backend': {'type': 'disk'}, 'gt_size': list(gt_size), **extra}
    return build_dataset(opt)


def test_pads_small_frames_with_zeros_and_crops_large_ones_at_one_position(tmp_path):
    root = write_paired_folder(tmp_path / 'd', n=2, size=(32, 32))
    full = make(root, phase='val')[0]
    random.seed(0)
    item = make(root, gt_size=(40, 24))[0]  # taller than the frame (pad), narrower (crop)
    assert item['gt'].shape == item['lq'].shape == (3, 40, 24)
    assert torch.count_nonzero(item['gt'][:, 32:]) == 0 and torch.count_nonzero(item['lq'][:, 32:]) == 0
    # the kept rows are one window of the full image, the same for input and target
    offsets = [x for x in range(0, 9) if torch.equal(item['gt'][:, :32], full['gt'][:, :, x:x + 24])]
    assert len(offsets) == 1
    assert torch.equal(item['lq'][:, :32], full['lq'][:, :, offsets[0]:offsets[0] + 24])


def test_flips_keep_pairs_aligned_and_non_square_shapes(tmp_path):
    root = write_paired_folder(tmp_path / 'd', n=1, size=(32, 32))
    ds = make(root, gt_size=(32, 16), use_hflip=True, use_rot=True)
    full = make(root, phase='val')[0]
    for seed in range(8):
        random.seed(seed)
        item = ds[0]
        assert item['gt'].shape == (3, 32, 16)
        window_gt = [f(full['gt'])[:, :, x:x + 16] for f in (lambda t: t, lambda t: t.flip(-1), lambda t: t.flip(-2),
                                                                lambda t: t.flip(-1).flip(-2)) for x in range(17)]
        assert any(torch.equal(item['gt'], w) for w in window_gt)


def test_validation_returns_whole_images_and_bad_sizes_fail(tmp_path):
    root = write_paired_folder(tmp_path / 'd', n=1, size=(32, 48))
    assert make(root, phase='val')[0]['gt'].shape == (3, 32, 48)
    with pytest.raises(ValueError, match='gt_size'):
        make(root, gt_size=(0, 4))
