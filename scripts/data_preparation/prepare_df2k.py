"""Prepare DF2K (DIV2K train HR + Flickr2K HR) for ATD-light(+FKE) training (paper §4.1 E; docs/evaluation.md).

For every HR image, streamed one at a time:
  1. mod-crop to a multiple of every requested scale (lcm; 12 for ×2/×3/×4), so all LR images align exactly;
  2. LR_s = MATLAB-style bicubic downscale by 1/s (``basicsr.utils.matlab_functions.imresize``, antialiased,
     as the DIV2K LR_bicubic images were made), rounded to uint8;
  3. cut 480×480 HR sub-images every 240 px (the last one snapped to the border, BasicSR's extract_subimages
     rule with thresh 0) and the aligned (480/s)² LR sub-images, all named ``<stem>_sNNN.png``.
Then each folder is packed into an LMDB with BasicSR's LmdbMaker (keys = file stems, meta_info.txt), which
``PairedImageDataset`` (``io_backend: lmdb``) reads as pairs by key.

Layout written under ``--out`` (default datasets/DF2K)::

    HR_sub/  LR_bicubic_X2_sub/  LR_bicubic_X3_sub/  LR_bicubic_X4_sub/
    HR_sub.lmdb  LR_bicubic_X2_sub.lmdb  ...

A re-run resumes: finished source images are recorded in a journal and skipped, finished LMDBs are kept.

Usage::

    python scripts/data_preparation/prepare_df2k.py \
        --hr datasets/DIV2K/DIV2K_train_HR datasets/Flickr2K/Flickr2K_HR --out datasets/DF2K --scales 2 3 4
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prep_common import (Journal, LayoutError, list_images, make_lmdb, natural_sorted, pair_by_stem,  # noqa: E402
                         progress, read_image, write_image)

DEFAULT_HR = ('datasets/DIV2K/DIV2K_train_HR', 'datasets/Flickr2K/Flickr2K_HR')
EXPECTED_IMAGES = {'DIV2K_train_HR': 800, 'Flickr2K_HR': 2650}


def bicubic_downscale(img: np.ndarray, scale: int) -> np.ndarray:
    """uint8 H×W×C → uint8 (H/s)×(W/s)×C with BasicSR's MATLAB-compatible imresize (antialiased bicubic)."""
    import fke_basicsr  # noqa: F401  (compat shims before basicsr)
    from basicsr.utils.matlab_functions import imresize

    out = imresize(img.astype(np.float64) / 255.0, 1.0 / scale)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def subimage_starts(length: int, crop: int, step: int, thresh: int) -> list[int]:
    """BasicSR extract_subimages: every ``step``, plus a border-snapped start if more than ``thresh`` px remain."""
    if length < crop:
        return []
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def collect_sources(folders: list[Path]) -> dict[str, Path]:
    """Stem → HR path over all source folders; a stem present twice is an error (LMDB keys must be unique)."""
    out: dict[str, Path] = {}
    for folder in folders:
        for stem, path in list_images(folder, 'a folder of HR training images (DIV2K_train_HR, Flickr2K_HR)').items():
            if stem in out:
                raise LayoutError(f'HR stem {stem!r} appears in both {out[stem].parent} and {folder}; '
                                  'sub-image names and LMDB keys derive from stems, so they must be unique')
            out[stem] = path
    return out


def process_image(stem: str, path: Path, out: Path, scales: list[int], crop: int, step: int, thresh: int) -> int:
    """Write the HR and LR sub-images of one source image; returns the number of HR sub-images."""
    hr = read_image(path)
    if hr.ndim == 2:
        hr = np.repeat(hr[..., None], 3, axis=2)
    mod = math.lcm(*scales)
    h, w = (hr.shape[0] // mod) * mod, (hr.shape[1] // mod) * mod
    hr = hr[:h, :w, :3]
    lrs = {s: bicubic_downscale(hr, s) for s in scales}
    n = 0
    for y in subimage_starts(h, crop, step, thresh):
        for x in subimage_starts(w, crop, step, thresh):
            n += 1
            name = f'{stem}_s{n:03d}.png'
            write_image(np.ascontiguousarray(hr[y:y + crop, x:x + crop]), out / 'HR_sub' / name)
            for s, lr in lrs.items():
                ys, xs, cs = y // s, x // s, crop // s
                write_image(np.ascontiguousarray(lr[ys:ys + cs, xs:xs + cs]), out / f'LR_bicubic_X{s}_sub' / name)
    return n


def prepare(hr_folders: list[Path], out: Path, scales: list[int], crop: int = 480, step: int = 240,
            thresh: int = 0, lmdb: bool = True) -> dict[str, int]:
    """Run the whole preparation; returns counts {'images': processed now, 'subimages': written now}."""
    if not scales or any(s < 1 for s in scales):
        raise ValueError(f'scales: expected positive integers, got {scales}')
    bad = [s for s in scales if crop % s or step % s]
    if bad:
        raise ValueError(f'crop ({crop}) and step ({step}) must be divisible by every scale; not by {bad}')
    if step <= 0 or crop <= 0 or thresh < 0:
        raise ValueError(f'crop and step must be positive and thresh >= 0, got {crop}, {step}, {thresh}')
    sources = collect_sources(hr_folders)
    journal = Journal(out / '.df2k_subimages_done.txt')
    todo = natural_sorted(sources)  # an image interrupted half-way is redone (each write is atomic)
    counts = {'images': 0, 'subimages': 0}
    for stem in progress(todo, 'DF2K sub-images'):
        if stem in journal.done:
            continue
        counts['subimages'] += process_image(stem, sources[stem], out, scales, crop, step, thresh)
        counts['images'] += 1
        journal.mark(stem)
    hr_sub = list_images(out / 'HR_sub', 'HR sub-images')
    for s in scales:  # every HR sub-image must have its LR twin, by stem
        pair_by_stem(list_images(out / f'LR_bicubic_X{s}_sub', f'×{s} LR sub-images'), hr_sub, f'DF2K ×{s}')
    if lmdb:
        make_lmdb(out / 'HR_sub', out / 'HR_sub.lmdb')
        for s in scales:
            make_lmdb(out / f'LR_bicubic_X{s}_sub', out / f'LR_bicubic_X{s}_sub.lmdb')
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hr', nargs='+', default=list(DEFAULT_HR), help='HR image folders (DIV2K, Flickr2K)')
    parser.add_argument('--out', default='datasets/DF2K', help='output folder')
    parser.add_argument('--scales', nargs='+', type=int, default=[2, 3, 4])
    parser.add_argument('--crop', type=int, default=480, help='HR sub-image size')
    parser.add_argument('--step', type=int, default=240, help='HR sub-image step')
    parser.add_argument('--thresh', type=int, default=0, help='add a border-snapped crop if more px remain')
    parser.add_argument('--no-lmdb', action='store_true', help='stop after the PNG sub-images')
    args = parser.parse_args(argv)
    try:
        counts = prepare([Path(p) for p in args.hr], Path(args.out), args.scales, args.crop, args.step,
                         args.thresh, lmdb=not args.no_lmdb)
    except (LayoutError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    total = len(list_images(Path(args.out) / 'HR_sub', 'HR sub-images'))
    print(f"DF2K: {counts['images']} source images processed now, {counts['subimages']} new sub-images; "
          f'{total} HR sub-images in {args.out}')
    for folder in args.hr:
        exp = EXPECTED_IMAGES.get(Path(folder).name)
        n = len(list_images(Path(folder), 'HR images'))
        if exp is not None and n != exp:
            print(f'note: {folder} holds {n} images; the full set has {exp}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
