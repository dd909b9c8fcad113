"""Prepare GoPro (Nah et al., CVPR 2017) from the distributed ``GOPRO_Large`` folder (docs/evaluation.md, Table 1).

Input : GOPRO_Large/{train,test}/<GOPRxxxx_xx_xx>/{blur,blur_gamma,sharp}/<frame>.png  (``blur_gamma`` ignored)
Output: <dst>/GoPro/{train,test}/{blur,sharp}/<sequence>-<frame>.png     (full frames, flat)
        <dst>/GoPro/train_crops/{blur,sharp}/<sequence>-<frame>_sNNN.png  (512² crops, step 256; --crop-size 0: off)
        <dst>/GoPro/train_crops/{blur,sharp}.lmdb                          (with --lmdb)

    python scripts/data_preparation/prepare_gopro.py --src /data/GOPRO_Large --dst datasets [--lmdb]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prep_common import (LayoutError, crop_pairs, export_pairs, list_images, make_lmdb, pair_by_stem,  # noqa: E402
                         report, require_dir, run_cli)

EXPECTED = {'train': 2103, 'test': 1111}


def gopro_pairs(src: Path, split: str) -> list[tuple[str, Path, Path]]:
    """(``<seq>-<frame>``, blur, sharp) of one split; frame numbers repeat across sequences, hence the prefix."""
    root = require_dir(src / split, f'the GoPro {split}/ folder of GOPRO_Large (GOPRO_Large/{split}/<sequence>/'
                                    '{blur,sharp}/*.png)')
    seqs = sorted(p for p in root.iterdir() if p.is_dir())
    if not seqs:
        raise LayoutError(f'expected sequence folders (e.g. GOPR0384_11_00) in {root}, found none')
    pairs = []
    for seq in seqs:
        blur = list_images(seq / 'blur', f'the blur/ folder of sequence {seq.name} (blur_gamma is not used)')
        sharp = list_images(seq / 'sharp', f'the sharp/ folder of sequence {seq.name}')
        pairs += [(f'{seq.name}-{stem}', b, s) for stem, b, s in pair_by_stem(blur, sharp, f'{split}/{seq.name}')]
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--src', type=Path, required=True, help='the GOPRO_Large folder as extracted')
    ap.add_argument('--dst', type=Path, required=True, help='datasets root; GoPro/ is created inside')
    ap.add_argument('--splits', nargs='+', default=['train', 'test'], choices=['train', 'test'])
    ap.add_argument('--crop-size', type=int, default=512, help='train crop size (0 disables the crops)')
    ap.add_argument('--crop-step', type=int, default=256)
    ap.add_argument('--lmdb', action='store_true', help='also pack the train crops into LMDB')
    args = ap.parse_args(argv)

    out = args.dst / 'GoPro'
    counts = {}
    for split in args.splits:  # validate every split before writing anything
        counts[split] = gopro_pairs(args.src, split)
    for split, pairs in counts.items():
        export_pairs(pairs, out / split / 'blur', out / split / 'sharp', f'GoPro {split}')
        if split == 'train' and args.crop_size > 0:
            crops = out / 'train_crops'
            crop_pairs(pairs, crops / 'blur', crops / 'sharp', args.crop_size, args.crop_step, 'GoPro train crops')
            if args.lmdb:
                for side in ('blur', 'sharp'):
                    make_lmdb(crops / side, crops / f'{side}.lmdb')
    report('GoPro', {k: len(v) for k, v in counts.items()}, EXPECTED)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
