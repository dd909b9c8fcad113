"""Prepare the lightweight-SR benchmarks (Set5, Set14, BSD100, Urban100, Manga109) for options/test/SR.

For each set and each scale s, streamed one image at a time:
  * ``<out>/<Set>/HR/<stem>.png``: the HR image as RGB PNG (not mod-cropped: BasicSR's PairedImageDataset
    crops the GT to s·LR size at test time, which is exactly the mod-s crop of the usual protocol);
  * ``<out>/<Set>/LR_bicubic/X<s>/<stem>.png``: MATLAB-style bicubic downscale (BasicSR's imresize,
    antialiased) of the HR image mod-cropped to a multiple of s, rounded to uint8 (docs/evaluation.md, Table 5).
HR and LR pair by file stem. A re-run skips the files that exist.

The source folder ``--src`` holds one folder per set (``Set5``, ``Set14``, ``BSD100`` or ``B100``,
``Urban100``, ``Manga109``); in it the HR images either directly or in ``HR``, ``GTmod12``, ``original`` or
``GT``. Files whose stem marks them as low-resolution (``*_LR*``) are skipped; a ``_SRF_<k>_HR`` or
``_HR`` suffix is dropped from the stem.

Usage::

    python scripts/data_preparation/prepare_sr_benchmarks.py --src datasets/raw --out datasets/SR_benchmarks
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prep_common import (IMAGE_EXTS, LayoutError, list_images, natural_sorted, pair_by_stem, progress,  # noqa: E402
                         read_image, write_image)
from prepare_df2k import bicubic_downscale  # noqa: E402

SETS = ('Set5', 'Set14', 'BSD100', 'Urban100', 'Manga109')
ALIASES = {'BSD100': ('BSD100', 'B100', 'BSDS100')}
EXPECTED = {'Set5': 5, 'Set14': 14, 'BSD100': 100, 'Urban100': 100, 'Manga109': 109}
HR_SUBDIRS = ('', 'HR', 'GTmod12', 'original', 'GT')
_LR_STEM = re.compile(r'_LR($|_)', re.IGNORECASE)
_HR_SUFFIX = re.compile(r'(_SRF_\d+)?_HR$', re.IGNORECASE)


def find_hr_images(src: Path, name: str) -> dict[str, Path]:
    """Stem → path of the HR images of set ``name`` under ``src`` (see the module docstring for the layout)."""
    tried = []
    for alias in ALIASES.get(name, (name,)):
        for sub in HR_SUBDIRS:
            folder = src / alias / sub if sub else src / alias
            tried.append(str(folder))
            if not folder.is_dir():
                continue
            files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                     and not _LR_STEM.search(p.stem)]
            if not files:
                continue
            out: dict[str, Path] = {}
            for p in files:
                stem = _HR_SUFFIX.sub('', p.stem)
                if stem in out:
                    raise LayoutError(f'{folder}: {out[stem].name} and {p.name} both give the image name {stem!r}; '
                                      'keep one HR file per image (e.g. only the *_SRF_2_HR files)')
                out[stem] = p
            return out
    raise LayoutError(f'no HR images for {name}: looked in ' + ', '.join(tried))


def read_rgb_as_bgr(path: Path) -> np.ndarray:
    """Read any image as 3-channel uint8 BGR (grayscale benchmark images are replicated to 3 channels)."""
    img = read_image(path, cv2.IMREAD_COLOR)
    if img.dtype != np.uint8:
        raise LayoutError(f'{path}: expected an 8-bit image, got {img.dtype}')
    return img


def prepare_set(src: Path, out: Path, name: str, scales: list[int]) -> int:
    """Write HR and LR_bicubic/X{s} for one set; returns how many files were written now."""
    images = find_hr_images(src, name)
    written = 0
    for stem in progress(natural_sorted(images), name):
        hr_dst = out / name / 'HR' / f'{stem}.png'
        lr_dsts = {s: out / name / 'LR_bicubic' / f'X{s}' / f'{stem}.png' for s in scales}
        if hr_dst.exists() and all(p.exists() for p in lr_dsts.values()):
            continue
        hr = read_rgb_as_bgr(images[stem])
        if not hr_dst.exists():
            write_image(hr, hr_dst)
            written += 1
        for s, dst in lr_dsts.items():
            if dst.exists():
                continue
            h, w = (hr.shape[0] // s) * s, (hr.shape[1] // s) * s
            if h == 0 or w == 0:
                raise LayoutError(f'{images[stem]} ({hr.shape[0]}x{hr.shape[1]}) is smaller than the scale {s}')
            write_image(bicubic_downscale(hr[:h, :w], s), dst)
            written += 1
    hr_all = list_images(out / name / 'HR', f'{name} HR images')
    for s in scales:
        pair_by_stem(list_images(out / name / 'LR_bicubic' / f'X{s}', f'{name} ×{s} LR images'), hr_all,
                     f'{name} ×{s}')
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--src', required=True, help='folder with one sub-folder per benchmark (HR images)')
    parser.add_argument('--out', default='datasets/SR_benchmarks', help='output root')
    parser.add_argument('--sets', nargs='+', default=list(SETS), choices=SETS)
    parser.add_argument('--scales', nargs='+', type=int, default=[2, 3, 4])
    args = parser.parse_args(argv)
    if any(s < 1 for s in args.scales):
        parser.error(f'--scales: expected positive integers, got {args.scales}')
    try:
        for name in args.sets:
            n = prepare_set(Path(args.src), Path(args.out), name, args.scales)
            total = len(list_images(Path(args.out) / name / 'HR', f'{name} HR images'))
            note = '' if total == EXPECTED[name] else f' (the full set has {EXPECTED[name]})'
            print(f'{name}: {total} images{note}, {n} files written now')
    except LayoutError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
