"""Prepare RealBlur-J / RealBlur-R (Rim et al., ECCV 2020) from the distributed folder (docs/evaluation.md, Table 2).

Input : <src>/RealBlur-J_ECC_IMCORR_centroid_itensity_ref/sceneNNN/{blur,gt}/{blur_M,gt_M}.png
        <src>/RealBlur-R_BM3D_ECC_IMCORR_centroid_itensity_ref/...
        <src>/RealBlur_{J,R}_{train,test}_list.txt   one pair per line: "<gt path> <blur path>" (GT first),
        paths relative to <src>; the official evaluator maps scene244 to the folder scene244_reflect.
Output: <dst>/RealBlur_{J,R}/{train,test}/{blur,sharp}/sceneNNN_M.png   (pairs exactly as the official lists)
        <dst>/RealBlur_{J,R}/train/{blur,sharp}.lmdb                   (with --lmdb)

    python scripts/data_preparation/prepare_realblur.py --src /data/RealBlur --dst datasets
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prep_common import LayoutError, export_pairs, make_lmdb, report, require_dir, run_cli  # noqa: E402

EXPECTED = {'train': 3758, 'test': 980}
_ENTRY = re.compile(r'(scene\d+)(?:_reflect)?/(gt|blur)/(gt|blur)_(\d+)\.png$')


def _resolve(src: Path, rel: str) -> Path:
    p = src / rel
    if not p.exists() and '/scene244/' in f'/{rel}':
        p = src / rel.replace('scene244/', 'scene244_reflect/')
    return p


def realblur_pairs(src: Path, subset: str, split: str) -> list[tuple[str, Path, Path]]:
    """(sceneNNN_M, blur, gt) in the order of the official list file; GT and blur must name the same frame."""
    lst = src / f'RealBlur_{subset}_{split}_list.txt'
    if not lst.is_file():
        raise LayoutError(f'expected the official list file {lst.name} in {src} (lines "<gt path> <blur path>")')
    pairs, seen = [], set()
    for i, line in enumerate(lst.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 2:
            raise LayoutError(f'{lst.name}:{i}: expected "<gt path> <blur path>", got {line!r}')
        gt_rel, blur_rel = fields[0], fields[1]
        mg, mb = _ENTRY.search(gt_rel), _ENTRY.search(blur_rel)
        if not (mg and mb and mg.group(2) == 'gt' and mb.group(2) == 'blur'):
            raise LayoutError(f'{lst.name}:{i}: expected "sceneNNN/gt/gt_M.png sceneNNN/blur/blur_M.png" '
                              f'(GT first), got {line!r}')
        if (mg.group(1), mg.group(4)) != (mb.group(1), mb.group(4)):
            raise LayoutError(f'{lst.name}:{i}: GT and blur name different frames: {line!r}')
        gt, blur = _resolve(src, gt_rel), _resolve(src, blur_rel)
        for p in (gt, blur):
            if not p.is_file():
                raise LayoutError(f'{lst.name}:{i}: listed file {p} is missing')
        name = f'{mg.group(1)}_{mg.group(4)}'
        if name in seen:
            raise LayoutError(f'{lst.name}:{i}: frame {name} is listed twice')
        seen.add(name)
        pairs.append((name, blur, gt))
    if not pairs:
        raise LayoutError(f'{lst} lists no pairs')
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--src', type=Path, required=True, help='folder holding the RealBlur-*_ref folders and lists')
    ap.add_argument('--dst', type=Path, required=True, help='datasets root; RealBlur_J/ and RealBlur_R/ go inside')
    ap.add_argument('--subsets', nargs='+', default=['J', 'R'], choices=['J', 'R'])
    ap.add_argument('--splits', nargs='+', default=['train', 'test'], choices=['train', 'test'])
    ap.add_argument('--lmdb', action='store_true', help='also pack the train split into LMDB')
    args = ap.parse_args(argv)
    require_dir(args.src, 'the RealBlur download folder')
    todo = {(s, sp): realblur_pairs(args.src, s, sp) for s in args.subsets for sp in args.splits}
    for (subset, split), pairs in todo.items():
        out = args.dst / f'RealBlur_{subset}' / split
        export_pairs(pairs, out / 'blur', out / 'sharp', f'RealBlur-{subset} {split}')
        if args.lmdb and split == 'train':
            for side in ('blur', 'sharp'):
                make_lmdb(out / side, out.parent / f'train_{side}.lmdb')
    for subset in args.subsets:
        report(f'RealBlur-{subset}', {sp: len(todo[(subset, sp)]) for sp in args.splits}, EXPECTED)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
