"""Prepare REDS for NTIRE 2021 deblurring track 2 (JPEG artifacts) (Nah et al., CVPRW 2019; docs/evaluation.md).

Input : <src>/val/val_blur_jpeg/NNN/FFFFFFFF.jpg, <src>/val/val_sharp/NNN/FFFFFFFF.png
        (<src>/train/train_blur_jpeg, train/train_sharp with --train)
Output: <dst>/REDS/val300/{blur,sharp}/NNN_FFFFFFFF.png  — val-300 = the frames ending in 9 of each val clip
        (00000009, 00000019, ..., 00000099: 10 × 30 clips), NOT the first 300 and not REDS4;
        <dst>/REDS/train/{blur,sharp}/NNN_FFFFFFFF.png and, with --lmdb, REDS/train/{blur,sharp}.lmdb.
JPEG inputs are decoded once with OpenCV and stored losslessly as PNG (pixels identical to reading the JPEG
with OpenCV), so BasicSR's paired dataset finds input and target under the same file name.

    python scripts/data_preparation/prepare_reds.py --src /data/REDS --dst datasets [--train --lmdb]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from prep_common import (LayoutError, export_pairs, list_images, make_lmdb, pair_by_stem,  # noqa: E402
                         report, require_dir, run_cli)

EXPECTED = {'val300': 300, 'train': 24000}


def reds_pairs(src: Path, split: str, val300: bool) -> list[tuple[str, Path, Path]]:
    """(NNN_FFFFFFFF, blur jpeg, sharp png) of a split; ``val300`` keeps only frames whose number ends in 9."""
    blur_root = require_dir(src / split / f'{split}_blur_jpeg', f'REDS {split}/{split}_blur_jpeg/<clip>/*.jpg')
    sharp_root = require_dir(src / split / f'{split}_sharp', f'REDS {split}/{split}_sharp/<clip>/*.png')
    clips = sorted(p.name for p in blur_root.iterdir() if p.is_dir())
    if not clips:
        raise LayoutError(f'expected clip folders 000, 001, ... in {blur_root}, found none')
    pairs = []
    for clip in clips:
        blur = list_images(blur_root / clip, f'blur_jpeg clip {clip}', ('.jpg', '.jpeg', '.png'))
        sharp = list_images(sharp_root / clip, f'sharp clip {clip} (folder {sharp_root / clip})', ('.png',))
        for stem, b, s in pair_by_stem(blur, sharp, f'{split} clip {clip}'):
            if not stem.isdigit():
                raise LayoutError(f'REDS frame names are 8-digit numbers, got {b.name} in clip {clip}')
            if not val300 or stem.endswith('9'):
                pairs.append((f'{clip}_{stem}', b, s))
    return pairs


def _decode(img):  # identity on the decoded pixels: read_image already decoded the JPEG with OpenCV
    return img


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--src', type=Path, required=True, help='REDS root holding val/ (and train/)')
    ap.add_argument('--dst', type=Path, required=True, help='datasets root; REDS/ is created inside')
    ap.add_argument('--train', action='store_true', help='also prepare the 24,000 training pairs')
    ap.add_argument('--lmdb', action='store_true', help='pack the training pairs into LMDB (with --train)')
    args = ap.parse_args(argv)
    todo = {'val300': reds_pairs(args.src, 'val', val300=True)}
    if args.train:
        todo['train'] = reds_pairs(args.src, 'train', val300=False)
    for split, pairs in todo.items():
        out = args.dst / 'REDS' / split
        export_pairs(pairs, out / 'blur', out / 'sharp', f'REDS {split}', input_fn=_decode, input_ext='.png')
        if args.lmdb and split == 'train':
            for side in ('blur', 'sharp'):
                make_lmdb(out / side, out.parent / f'train_{side}.lmdb')
    report('REDS', {k: len(v) for k, v in todo.items()}, EXPECTED)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
